################################################################################
#
# cardwall: what the cardwall-* packages share
#
################################################################################

# The packages build from this repository (the directory above the BR2_EXTERNAL tree), not
# from a download: the image always holds the code it was built next to.
CARDWALL_SOURCE_DIR = $(realpath $(BR2_EXTERNAL_CARDWALL_PATH)/..)
CARDWALL_VERSION_FROM_TREE = $(shell sed -n 's/^version = "\(.*\)"/\1/p' $(CARDWALL_SOURCE_DIR)/cardfw/Cargo.toml | head -n 1)

# Build outputs, the Buildroot tree itself and VCS data are not copied into the build dir.
CARDWALL_RSYNC_EXCLUSIONS = --exclude /target --exclude /buildroot

# A local source gets no download step, so Buildroot's cargo vendoring (done at download time
# for remote sources) is done here, before the build (a pre-configure hook: host-rustc is
# built by then): `cargo vendor` fills VENDOR/ from the shared cargo home (network needed
# once, then offline) and points .cargo/config.toml at it, so the build step's
# `cargo build --offline --locked` finds every crate.
define CARDWALL_CARGO_VENDOR
	mkdir -p $(@D)/.cargo $(BR_CARGO_HOME)
	cd $(@D) && $(HOST_MAKE_ENV) CARGO_HOME=$(BR_CARGO_HOME) \
		flock $(BR_CARGO_HOME)/.br-lock \
		cargo vendor --locked --manifest-path Cargo.toml VENDOR > .cargo/config.toml
endef
