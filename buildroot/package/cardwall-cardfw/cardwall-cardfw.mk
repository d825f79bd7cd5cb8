################################################################################
#
# cardwall-cardfw
#
################################################################################

CARDWALL_CARDFW_VERSION = $(CARDWALL_VERSION_FROM_TREE)
CARDWALL_CARDFW_SITE = $(CARDWALL_SOURCE_DIR)
CARDWALL_CARDFW_SITE_METHOD = local
CARDWALL_CARDFW_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = $(CARDWALL_RSYNC_EXCLUSIONS)
# The crate in the workspace; cargo finds the workspace (and its Cargo.lock) above it.
CARDWALL_CARDFW_SUBDIR = cardfw
CARDWALL_CARDFW_LICENSE = Apache-2.0 OR MIT
CARDWALL_CARDFW_PRE_CONFIGURE_HOOKS += CARDWALL_CARGO_VENDOR

$(eval $(cargo-package))
