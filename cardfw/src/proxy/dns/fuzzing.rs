//! The fuzz targets' way in (`cardfw/fuzz`, target `dns_query`): the part of the DNS path
//! that needs the upstream, run on bytes instead of a socket. Not an API; nothing else calls it.
//!
//! What the card answers by itself (malformed messages, other opcodes, zone transfers, the DoH
//! canary, denied names) the target reaches through [`answer`](super::answer) on a card whose
//! rules deny every name, so no query ever leaves it.

use std::time::{Duration, Instant};

use hickory_proto::op::OpCode;
use hickory_proto::rr::RecordType;

use super::{
    CLASSIC_UDP_PAYLOAD, Cache, CacheKey, encode, parse_query, parse_reply, question_name, relay,
};

/// What the card sends `query`'s client when the upstream answered `upstream`: read as
/// `exchange_udp` reads it (less its id and question check, which random bytes never pass),
/// kept in a one-answer cache, taken out `age_secs` later (or relayed fresh if the cache did
/// not keep it or it expired), readdressed to the query and encoded within what the client
/// can receive over UDP (`over_tcp` false) or TCP.
///
/// `None` when the card would not forward `query` (malformed, not a query, a zone transfer)
/// or would not accept `upstream` as an answer.
pub fn relayed_answer(
    query: &[u8],
    upstream: &[u8],
    over_tcp: bool,
    age_secs: u16,
) -> Option<Vec<u8>> {
    let query = parse_query(query).ok()?;
    let question = &query.queries[0];
    if query.op_code != OpCode::Query
        || matches!(question.query_type(), RecordType::AXFR | RecordType::IXFR)
    {
        return None;
    }
    let reply = parse_reply(upstream)?;
    let key = CacheKey::of(&query, question_name(question.name()));
    let cache = Cache::new(1);
    let stored = Instant::now();
    cache.insert(key.clone(), &reply, upstream.len(), stored);
    let later = stored + Duration::from_secs(u64::from(age_secs));
    let (answer, age) = cache.get(&key, later).unwrap_or((reply, 0));
    // As `answer_over` sets it.
    let limit = if over_tcp {
        usize::from(u16::MAX)
    } else {
        query.edns.as_ref().map_or(CLASSIC_UDP_PAYLOAD, |edns| {
            usize::from(edns.max_payload()).max(CLASSIC_UDP_PAYLOAD)
        })
    };
    encode(&relay(&answer, &query, age), limit)
}
