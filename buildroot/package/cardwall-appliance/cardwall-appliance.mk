################################################################################
#
# cardwall-appliance
#
################################################################################

CARDWALL_APPLIANCE_VERSION = $(CARDWALL_VERSION_FROM_TREE)
CARDWALL_APPLIANCE_SITE = $(CARDWALL_SOURCE_DIR)
CARDWALL_APPLIANCE_SITE_METHOD = local
CARDWALL_APPLIANCE_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = $(CARDWALL_RSYNC_EXCLUSIONS)
# The crate in the workspace; cargo finds the workspace (and its Cargo.lock) above it.
CARDWALL_APPLIANCE_SUBDIR = appliance
CARDWALL_APPLIANCE_LICENSE = Apache-2.0 OR MIT
CARDWALL_APPLIANCE_PRE_CONFIGURE_HOOKS += CARDWALL_CARGO_VENDOR

$(eval $(cargo-package))
