//! Lists every rule file can use without defining them.
//!
//! `@doh` names the well-known DNS-over-HTTPS and DNS-over-TLS endpoints. A browser or an app
//! that talks DNS to one of them over TLS hides its lookups from the card's DNS rules, so the
//! shipped rule files deny it. The list is short on purpose: it names the public resolvers
//! browsers and operating systems offer in their settings (Firefox, Chromium's auto-upgrade
//! table, Android's private DNS, Apple's encrypted DNS profiles). A name a resolver adds later
//! goes into a list file of one's own; the list is a floor, not a catalogue.

use crate::host::HostPattern;

/// `@doh`: public DNS-over-HTTPS/TLS endpoints, as names and `*.` suffixes.
pub const DOH: &[&str] = &[
    // Cloudflare
    "cloudflare-dns.com",
    "*.cloudflare-dns.com",
    "one.one.one.one",
    "1dot1dot1dot1.cloudflare-dns.com",
    // Google
    "dns.google",
    "dns.google.com",
    "dns64.dns.google",
    // Quad9
    "dns.quad9.net",
    "dns9.quad9.net",
    "dns10.quad9.net",
    "dns11.quad9.net",
    // Mozilla's own (Firefox's TRR)
    "mozilla.cloudflare-dns.com",
    "doh.mozilla.net",
    "trr.dns.nextdns.io",
    // NextDNS
    "dns.nextdns.io",
    "*.dns.nextdns.io",
    // AdGuard
    "dns.adguard.com",
    "dns.adguard-dns.com",
    "*.dns.adguard-dns.com",
    "dns-family.adguard.com",
    "dns-unfiltered.adguard.com",
    // OpenDNS / Cisco Umbrella
    "doh.opendns.com",
    "dns.opendns.com",
    "doh.familyshield.opendns.com",
    // CleanBrowsing
    "doh.cleanbrowsing.org",
    "*.doh.cleanbrowsing.org",
    // Comcast (Firefox's TRR partner)
    "doh.xfinity.com",
    // Control D
    "freedns.controld.com",
    "*.controld.com",
    // Mullvad
    "dns.mullvad.net",
    "*.dns.mullvad.net",
    // Others offered in browser settings
    "doh.dns.sb",
    "dns.switch.ch",
    "dns.digitale-gesellschaft.ch",
    "doh.libredns.gr",
    "dns.alidns.com",
    "doh.pub",
    "dns.twnic.tw",
];

/// The built-in lists by the name they are used with (`@doh` is `doh`).
pub fn list(name: &str) -> Option<&'static [&'static str]> {
    match name {
        "doh" => Some(DOH),
        _ => None,
    }
}

/// The patterns of a built-in list.
pub fn patterns(name: &str) -> Option<Vec<HostPattern>> {
    list(name).map(|names| {
        names
            .iter()
            .map(|n| HostPattern::parse(n, false).expect("built-in names are valid patterns"))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_name_parses() {
        assert!(patterns("doh").is_some_and(|p| p.len() == DOH.len()));
        assert!(patterns("nope").is_none());
    }
}
