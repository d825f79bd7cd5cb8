//! Peer I/O with either end hostile, chosen by the first input byte (mod 4):
//! 0. the rest as the link's byte stream, cut into reads by the second byte: the frame reader
//!    gives only frames of 1..=MAX_FRAME bytes that are exactly what the stream said, and
//!    gives the same frames however the stream is cut (as long as it needs no resync);
//! 1. the rest as a card's answers (one length byte, then the answer) to a host with frames
//!    to send: the host's commands are well-formed, its frames well-sized, its state sane;
//! 2. the rest as a host's commands (one length byte, then the command) to a card with frames
//!    to send: answers stay within GET_PACKET's 256 bytes and announce what is queued;
//! 3. the rest as frames (one length byte, then that many bytes, alternating direction)
//!    (repeated up to 7 times) between an honest host and card, through emitted and parsed APDUs: every frame arrives,
//!    in order, both ways.
#![no_main]

use apdu::peerio::{
    CLA, Client, ClientState, FrameReader, INS_GET_PACKET, INS_POLL, INS_PUT_PACKET, MAX_FRAME,
    MAX_GET, MAX_PUT, Server, ServerState, as_ready_write,
};
use apdu::{Command, Response, StatusWord};
use libfuzzer_sys::fuzz_target;

/// `bytes` as records of one length byte and that many bytes (the last one possibly short).
fn records(mut bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (&length, rest) = bytes.split_first()?;
        let (record, rest) = rest.split_at(usize::from(length).min(rest.len()));
        bytes = rest;
        Some(record)
    })
}

fn check_frame(frame: &[u8]) {
    assert!(
        !frame.is_empty() && frame.len() <= MAX_FRAME,
        "frame of {}",
        frame.len()
    );
}

/// What a stream without resyncs holds: each frame with its length, then an incomplete tail.
fn frame_stream(stream: &[u8]) {
    let Some((&cut, stream)) = stream.split_first() else {
        return;
    };
    let mut whole = FrameReader::default();
    let whole_frames = whole.push(stream);
    let mut pieces = FrameReader::default();
    let mut cut_frames = Vec::new();
    for piece in stream.chunks(1 + usize::from(cut % 32)) {
        cut_frames.extend(pieces.push(piece));
    }
    whole_frames
        .iter()
        .chain(&cut_frames)
        .for_each(|f| check_frame(f));
    if whole.resyncs == 0 && pieces.resyncs == 0 {
        assert_eq!(whole_frames, cut_frames);
        let mut rebuilt = Vec::new();
        for frame in &whole_frames {
            rebuilt.extend_from_slice(&(frame.len() as u16).to_be_bytes());
            rebuilt.extend_from_slice(frame);
        }
        assert!(stream.starts_with(&rebuilt));
    }
}

fn check_command_from_host(command: &Command, put: bool) {
    assert_eq!(Command::parse(&command.emit()).as_ref(), Ok(command));
    assert_eq!(command.cla, CLA);
    match command.ins {
        INS_POLL => assert_eq!(command.data.len(), 1),
        INS_PUT_PACKET => {
            assert!(put);
            assert!(!command.data.is_empty() && command.data.len() <= MAX_PUT);
        }
        INS_GET_PACKET => {
            assert!(command.data.is_empty());
            assert!(command.le.is_some_and(|le| (1..=MAX_GET).contains(&le)));
        }
        other => panic!("the host sent INS {other:02X}"),
    }
}

fn hostile_card(answers: &[u8]) {
    let mut server = Server::default();
    assert!(server.send(&[1; 700]));
    assert!(server.send(&[2; 3]));
    for answer in records(answers) {
        let step = server.step(|command| {
            check_command_from_host(command, true);
            Response::parse(answer).ok_or(std::fmt::Error)
        });
        if let Ok(step) = step {
            step.frames.iter().for_each(|f| check_frame(f));
        }
        if let ServerState::GettingFromCard(len) = server.state() {
            assert!((1..=MAX_GET).contains(&len));
        }
    }
}

fn hostile_host(commands: &[u8]) {
    let mut client = Client::default();
    assert!(client.write(&[3; 600]));
    for (n, bytes) in records(commands).enumerate() {
        if n % 7 == 6 {
            client.write(&[4; 100]);
        }
        let Ok(command) = Command::parse(bytes) else {
            continue;
        };
        let response = client.handle(&command);
        assert!(response.data.len() <= MAX_GET);
        if !response.data.is_empty() {
            assert_eq!(command.ins, INS_GET_PACKET);
            assert!(response.data.len() <= command.le.unwrap_or(0));
        }
        if response.sw == StatusWord::OK {
            assert_eq!(client.state(), ClientState::WaitServerReadyRead);
        } else if as_ready_write(response.sw).is_some() {
            assert_eq!(client.state(), ClientState::WaitServerReadyWrite);
        }
        while let Some(frame) = client.read() {
            check_frame(&frame);
        }
    }
}

fn honest_link(frames: &[u8]) {
    let mut server = Server::default();
    let mut client = Client::default();
    let (mut to_card, mut from_card) = (Vec::new(), Vec::new());
    for (n, record) in records(frames).filter(|r| !r.is_empty()).enumerate() {
        // Longer than one APDU carries, some of them.
        let repeat = 1 + n % 7;
        let frame: Vec<u8> = record
            .iter()
            .cycle()
            .take(record.len() * repeat)
            .copied()
            .collect();
        let frame = &frame[..frame.len().min(MAX_FRAME)];
        if n % 2 == 0 {
            assert!(server.send(frame));
            to_card.push(frame.to_vec());
        } else {
            assert!(client.write(frame));
            from_card.push(frame.to_vec());
        }
    }
    let (mut got_to_card, mut got_from_card) = (Vec::new(), Vec::new());
    for _ in 0..10_000 {
        let step = server
            .step(|command| {
                check_command_from_host(command, true);
                let parsed = Command::parse(&command.emit()).unwrap();
                let response = client.handle(&parsed);
                Ok::<_, std::fmt::Error>(Response::parse(&response.emit()).unwrap())
            })
            .expect("an honest card never refuses");
        got_from_card.extend(step.frames);
        while let Some(frame) = client.read() {
            got_to_card.push(frame);
        }
        if step.idle {
            break;
        }
    }
    assert_eq!(got_to_card, to_card);
    assert_eq!(got_from_card, from_card);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => frame_stream(rest),
        1 => hostile_card(rest),
        2 => hostile_host(rest),
        _ => honest_link(rest),
    }
});
