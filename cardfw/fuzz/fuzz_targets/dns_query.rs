//! Any bytes as a DNS query from the protected side, and as the upstream's reply to it.
//!
//! Input: one flags byte (bit 0: the query came over TCP), two bytes of cache age in seconds,
//! a two-byte length, the query, and the rest the upstream's reply.
//!
//! - The card's own answers, through `dns::answer` on a card whose rules deny every name (so
//!   no query ever leaves it and the future is ready at once): malformed messages, other
//!   opcodes, zone transfers, the DoH canary, denied names. Every answer decodes, is a
//!   response with the query's id, carries no records, and fits what a UDP client receives;
//!   only a message too short for a header, or a response, goes unanswered.
//! - The upstream's reply relayed (`dns::fuzzing::relayed_answer`: read, cached, aged,
//!   readdressed, encoded): it decodes, is a response with the query's id and question, and
//!   fits the client's limit.
#![no_main]

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};

use cardfw::firewall::{Firewall, LoadedRules};
use cardfw::config::Config;
use cardfw::proxy::dns::{self, Cache};
use hickory_proto::op::{Message, MessageType, ResponseCode};
use libfuzzer_sys::fuzz_target;

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

fn deny_all_card() -> &'static (Arc<Firewall>, Cache) {
    static CARD: OnceLock<(Arc<Firewall>, Cache)> = OnceLock::new();
    CARD.get_or_init(|| {
        let rules = rules::RuleSet::from_text("deny.rules", "deny dns\n", &rules::NoFiles)
            .expect("the deny-all rules compile");
        let card = Firewall::new(
            Config::default(),
            LoadedRules {
                rules,
                version: "fuzz".into(),
                loaded_at: 0,
            },
            None,
        );
        let cache = Cache::new(16);
        (card, cache)
    })
}

/// The most a UDP client of `query` can receive: 512 bytes, or its EDNS payload if larger.
fn udp_limit(query: Option<&Message>) -> usize {
    query
        .and_then(|query| query.edns.as_ref())
        .map_or(512, |edns| usize::from(edns.max_payload()).max(512))
}

fn check_own_answer(query: &[u8]) {
    let (card, cache) = deny_all_card();
    let mut future = pin!(dns::answer(query, CLIENT, card, cache));
    let Poll::Ready(reply) = future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    else {
        panic!("the card waited on something: the query went upstream");
    };
    let unanswerable = query.len() < 12 || query[2] & 0x80 != 0;
    let Some(reply) = reply else {
        assert!(unanswerable, "a query with a header got no answer");
        return;
    };
    assert!(!unanswerable, "answered a response or a headerless message");
    let decoded = Message::from_vec(query).ok();
    let message = Message::from_vec(&reply).expect("the card's answer decodes");
    assert_eq!(message.metadata.message_type, MessageType::Response);
    assert_eq!(
        message.metadata.id,
        u16::from_be_bytes([query[0], query[1]])
    );
    assert!(message.answers.is_empty() && message.authorities.is_empty());
    let code = message.metadata.response_code;
    assert!(
        matches!(
            code,
            ResponseCode::FormErr
                | ResponseCode::NotImp
                | ResponseCode::Refused
                | ResponseCode::NXDomain
        ),
        "{code:?} from a card that denies everything"
    );
    if code != ResponseCode::FormErr {
        let decoded = decoded
            .as_ref()
            .expect("only FORMERR for what does not decode");
        assert_eq!(message.queries, decoded.queries);
    }
    assert!(reply.len() <= udp_limit(decoded.as_ref()));
}

fn check_relayed(query: &[u8], upstream: &[u8], over_tcp: bool, age: u16) {
    let Some(reply) = dns::fuzzing::relayed_answer(query, upstream, over_tcp, age) else {
        return;
    };
    let decoded = Message::from_vec(query).expect("a relayed query decodes");
    let message = Message::from_vec(&reply).expect("a relayed answer decodes");
    assert_eq!(message.metadata.message_type, MessageType::Response);
    assert_eq!(message.metadata.id, decoded.metadata.id);
    assert_eq!(message.queries, decoded.queries);
    let limit = if over_tcp {
        usize::from(u16::MAX)
    } else {
        udp_limit(Some(&decoded))
    };
    assert!(
        reply.len() <= limit,
        "{} bytes over a limit of {limit}",
        reply.len()
    );
}

fuzz_target!(|data: &[u8]| {
    let [flags, age_high, age_low, length_high, length_low, rest @ ..] = data else {
        return;
    };
    let length = usize::from(u16::from_be_bytes([*length_high, *length_low])).min(rest.len());
    let (query, upstream) = rest.split_at(length);
    check_own_answer(query);
    check_relayed(
        query,
        upstream,
        flags & 1 != 0,
        u16::from_be_bytes([*age_high, *age_low]),
    );
});
