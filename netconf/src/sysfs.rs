//! The two things the appliance reads from sysfs rather than netlink: which link is the card
//! (the kernel tells a link's driver only there) and a link's byte counters.
//!
//! Each lookup has an `_in` twin that takes where sysfs is mounted, so tests lay out a
//! directory like it.

use std::path::Path;

/// Where sysfs is mounted.
const SYSFS: &str = "/sys";

/// The name of the network interface whose device is bound to `driver` (the card: `cdc_eem`),
/// from `/sys/class/net/<if>/device/driver`. The first by name if several; `None` if absent.
pub fn find_by_driver(driver: &str) -> Option<String> {
    find_by_driver_in(Path::new(SYSFS), driver)
}

/// [`find_by_driver`] with sysfs mounted at `sysfs` (tests lay out a directory like it).
pub fn find_by_driver_in(sysfs: &Path, driver: &str) -> Option<String> {
    let class_net = sysfs.join("class/net");
    let mut matches: Vec<String> = std::fs::read_dir(&class_net)
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| {
            // A symlink into /sys/bus/<bus>/drivers/<driver>; virtual links have no `device`.
            std::fs::read_link(class_net.join(name).join("device/driver"))
                .ok()
                .is_some_and(|target| target.file_name().is_some_and(|n| n == driver))
        })
        .collect();
    matches.sort();
    matches.into_iter().next()
}

/// Bytes received and sent by the interface, from `/sys/class/net/<if>/statistics/`.
/// `None` if the interface does not exist or the counters cannot be read.
pub fn counters(name: &str) -> Option<(u64, u64)> {
    counters_in(Path::new(SYSFS), name)
}

/// [`counters`] with sysfs mounted at `sysfs`.
pub fn counters_in(sysfs: &Path, name: &str) -> Option<(u64, u64)> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return None;
    }
    let statistics = sysfs.join("class/net").join(name).join("statistics");
    let read = |file: &str| -> Option<u64> {
        std::fs::read_to_string(statistics.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some((read("rx_bytes")?, read("tx_bytes")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    /// A directory laid out like sysfs: `class/net/<if>/device/driver` symlinks for the given
    /// (interface, driver) pairs (`None`: a virtual link without `device`), and statistics.
    fn fake_sysfs(links: &[(&str, Option<&str>)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for (name, driver) in links {
            let link = root.path().join("class/net").join(name);
            std::fs::create_dir_all(link.join("statistics")).unwrap();
            if let Some(driver) = driver {
                std::fs::create_dir_all(link.join("device")).unwrap();
                std::fs::create_dir_all(root.path().join("bus/usb/drivers").join(driver)).unwrap();
                let target = PathBuf::from("../../../bus/usb/drivers").join(driver);
                symlink(target, link.join("device/driver")).unwrap();
            }
        }
        root
    }

    #[test]
    fn the_card_is_found_by_its_driver() {
        let sysfs = fake_sysfs(&[
            ("eth0", Some("e1000e")),
            ("lo", None),
            ("usb1", Some("cdc_eem")),
            ("usb0", Some("cdc_eem")),
            ("wlan0", Some("cdc_eem_not")),
        ]);
        assert_eq!(
            find_by_driver_in(sysfs.path(), "cdc_eem").as_deref(),
            Some("usb0"),
            "the first by name of the two cards"
        );
        assert_eq!(
            find_by_driver_in(sysfs.path(), "e1000e").as_deref(),
            Some("eth0")
        );
        assert_eq!(find_by_driver_in(sysfs.path(), "cdc_ether"), None);
        assert_eq!(find_by_driver_in(sysfs.path(), ""), None);
    }

    #[test]
    fn no_card_when_sysfs_has_no_net_class() {
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(find_by_driver_in(empty.path(), "cdc_eem"), None);
        let sysfs = fake_sysfs(&[("eth0", Some("e1000e"))]);
        assert_eq!(find_by_driver_in(sysfs.path(), "cdc_eem"), None);
    }

    #[test]
    fn counters_are_read_from_statistics() {
        let sysfs = fake_sysfs(&[("usb0", Some("cdc_eem")), ("eth0", None), ("eth1", None)]);
        let statistics = |name: &str| sysfs.path().join("class/net").join(name).join("statistics");
        std::fs::write(statistics("usb0").join("rx_bytes"), "1234\n").unwrap();
        std::fs::write(
            statistics("usb0").join("tx_bytes"),
            "18446744073709551615\n",
        )
        .unwrap();
        assert_eq!(counters_in(sysfs.path(), "usb0"), Some((1234, u64::MAX)));
        // Only one counter, or garbage: no answer rather than a wrong one.
        std::fs::write(statistics("eth0").join("rx_bytes"), "5\n").unwrap();
        assert_eq!(counters_in(sysfs.path(), "eth0"), None);
        std::fs::write(statistics("eth1").join("rx_bytes"), "five\n").unwrap();
        std::fs::write(statistics("eth1").join("tx_bytes"), "6\n").unwrap();
        assert_eq!(counters_in(sysfs.path(), "eth1"), None);
        assert_eq!(counters_in(sysfs.path(), "missing"), None);
        for bad in ["", ".", "..", "../usb0", "a/b"] {
            assert_eq!(counters_in(sysfs.path(), bad), None, "{bad:?}");
        }
    }
}
