//! The bypass suite's packet kit on a plain veth pair: every crafted frame sent out of one end
//! arrives, byte for byte, at the other end's capture, and a capture on another link sees none.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use e2e::packets::{
    ALL_KINDS, CapturedFrame, Kind, Target, craft, interface_mac_in, random_marker, send_frames,
    start_capture,
};
use e2e::topology::Lab;

/// The frame as the receiving kernel hands it to a capture: an 802.1Q tag is taken off.
fn as_received(frame: &[u8]) -> Vec<u8> {
    if frame.get(12..14) == Some(&[0x81, 0x00][..]) {
        [&frame[..12], &frame[16..]].concat()
    } else {
        frame.to_vec()
    }
}

#[test]
fn every_kind_crosses_a_veth_pair_and_is_recognised() {
    if !e2e::require_root() {
        return;
    }
    let mut lab = Lab::new("pk").unwrap();
    let a = lab.namespace("a").unwrap();
    let b = lab.namespace("b").unwrap();
    lab.link(&a, "a0", &["10.5.0.1/24"], &b, "b0", &["10.5.0.2/24"])
        .unwrap();
    lab.link(&a, "a1", &["10.6.0.1/24"], &b, "b1", &["10.6.0.2/24"])
        .unwrap();

    let src_mac = interface_mac_in(&a, "a0").expect("a0 has a MAC");
    let dst_mac = interface_mac_in(&b, "b0").expect("b0 has a MAC");
    assert_ne!(src_mac, dst_mac);
    let t = Target {
        src_ip: Ipv4Addr::new(10, 5, 0, 1),
        ..Target::new(src_mac, dst_mac, random_marker())
    };
    let sent: Vec<(Kind, Vec<u8>)> = ALL_KINDS
        .iter()
        .flat_map(|&kind| craft(kind, &t).into_iter().map(move |f| (kind, f)))
        .collect();
    assert!(
        sent.len() > ALL_KINDS.len(),
        "fragments give several frames"
    );

    let capture = start_capture(&b, "b0").unwrap();
    let idle = start_capture(&b, "b1").unwrap();
    let frames: Vec<Vec<u8>> = sent.iter().map(|(_, f)| f.clone()).collect();
    a.enter(move || send_frames("a0", &frames))
        .join()
        .expect("sender thread")
        .expect("frames sent");
    let arrived = capture.stop();
    let idle_frames = idle.stop_all();

    let marked: Vec<&CapturedFrame> = arrived
        .iter()
        .filter(|f| f.carries_marker(t.marker))
        .collect();
    let listing = || {
        marked
            .iter()
            .map(|f| format!("  {:?}: {}", f.kind(t.marker), f.summary()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut per_kind: HashMap<Kind, usize> = HashMap::new();
    for frame in &marked {
        let kind = frame
            .kind(t.marker)
            .unwrap_or_else(|| panic!("marked frame without a kind: {}", frame.summary()));
        *per_kind.entry(kind).or_default() += 1;
        assert!(
            sent.iter()
                .any(|(k, f)| *k == kind && as_received(f) == frame.bytes),
            "{kind:?} frame arrived altered: {}\n{:02x?}",
            frame.summary(),
            frame.bytes
        );
    }
    for &kind in ALL_KINDS {
        assert_eq!(
            per_kind.get(&kind).copied().unwrap_or(0),
            kind.frame_count(),
            "{kind:?}: frames arrived; marked frames seen:\n{}",
            listing()
        );
    }
    assert_eq!(marked.len(), sent.len(), "{}", listing());

    let leaked: Vec<String> = idle_frames
        .iter()
        .filter(|f| f.carries_marker(t.marker))
        .map(CapturedFrame::summary)
        .collect();
    assert!(
        leaked.is_empty(),
        "marked frames on the idle link: {leaked:#?}"
    );
}

#[test]
fn a_capture_on_a_missing_interface_fails_with_its_name() {
    if !e2e::require_root() {
        return;
    }
    let mut lab = Lab::new("pkmiss").unwrap();
    let a = lab.namespace("a").unwrap();
    let error = start_capture(&a, "nosuch0").unwrap_err();
    assert!(error.to_string().contains("nosuch0"), "{error}");
    let sent = a
        .enter(|| send_frames("nosuch0", &[vec![0; 60]]))
        .join()
        .unwrap();
    assert!(sent.is_err());
}
