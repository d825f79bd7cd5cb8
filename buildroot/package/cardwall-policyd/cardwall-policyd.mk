################################################################################
#
# cardwall-policyd
#
################################################################################

CARDWALL_POLICYD_VERSION = $(CARDWALL_VERSION_FROM_TREE)
CARDWALL_POLICYD_SITE = $(CARDWALL_SOURCE_DIR)
CARDWALL_POLICYD_SITE_METHOD = local
CARDWALL_POLICYD_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = $(CARDWALL_RSYNC_EXCLUSIONS)
# The crate in the workspace: the whole server (SQLite is compiled in by sqlx, so no
# Buildroot sqlite package is needed).
CARDWALL_POLICYD_SUBDIR = policyd
CARDWALL_POLICYD_LICENSE = Apache-2.0 OR MIT
CARDWALL_POLICYD_PRE_CONFIGURE_HOOKS += CARDWALL_CARGO_VENDOR

$(eval $(cargo-package))
