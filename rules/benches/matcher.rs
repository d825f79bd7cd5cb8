//! The matcher at the size the issue names: 1,000 rules plus a 1,000,000-name blocklist.
//! Run: `cargo bench -p rules --bench matcher`. Prints the memory figures first, then
//! criterion's timings for compiling and for one decision of each kind.

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{BatchSize, Criterion};
use rules::{LocalTime, Protocol, Request, RuleSet};

const LIST_NAMES: usize = 1_000_000;
const RULES: usize = 1_000;

/// Name `i` of the blocklist, in the mix real lists have: mostly exact names, every tenth a
/// `*.` wildcard.
fn list_name(i: usize) -> String {
    let label = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
    if i.is_multiple_of(10) {
        format!("*.t{label:x}.net{}", i % 97)
    } else {
        format!("ad{label:x}.srv{}.example", i % 1013)
    }
}

fn blocklist() -> String {
    let mut text = String::with_capacity(LIST_NAMES * 24);
    for i in 0..LIST_NAMES {
        text += &list_name(i);
        text += "\n";
    }
    text
}

/// 1,000 rules of every kind; the blocklist rule sits in the middle so lookups must get past
/// half the rules either way.
fn rule_file() -> String {
    let mut text = String::from("list block file block.txt\n");
    for i in 0..RULES {
        let line = match i % 8 {
            _ if i == RULES / 2 => "blocklist: deny any host @block".to_string(),
            0 => format!("allow https host www{i}.corp.example"),
            1 => format!("deny any host *.tracker{i}.example"),
            2 => format!(
                "allow tcp dst 10.{}.{}.0/24 port {}",
                i % 250,
                i / 250,
                1000 + i
            ),
            3 => format!("allow http host intranet{i}.example path /public{i}/ method GET,HEAD"),
            4 => format!("deny tcp port {}-{}", 20000 + i * 10, 20000 + i * 10 + 5),
            5 => format!("allow dns host *.zone{i}.example"),
            6 => format!("allow https host app{i}.example time Mon-Fri 08:00-18:00"),
            _ => format!("deny http host media{i}.example content-type video/*"),
        };
        text += &line;
        text += "\n";
    }
    text += "allow dns\nallow https port 443\ndefault deny\n";
    text
}

fn compile(rules: &str, lists: &HashMap<String, String>) -> RuleSet {
    RuleSet::from_text("bench.rules", rules, lists).expect("the bench rule file is valid")
}

/// (VmRSS, VmHWM) of this process, in MiB.
fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn main() {
    let list_text = blocklist();
    let rules_text = rule_file();
    let lists = HashMap::from([("block.txt".to_string(), list_text)]);

    let (rss_before, _) = memory_mib();
    let started = std::time::Instant::now();
    let rules = compile(&rules_text, &lists);
    let compile_time = started.elapsed();
    let (rss_after, peak) = memory_mib();
    let stats = rules.stats();
    println!(
        "footprint: {} rules, {} names indexed; compile {:.2?} (single run); \
         RSS {rss_before:.1} MiB before compile (list text loaded), {rss_after:.1} MiB after \
         (+{:.1} MiB); peak RSS {peak:.1} MiB; host index heap {:.1} MiB",
        stats.rules,
        stats.indexed_names,
        compile_time,
        rss_after - rss_before,
        stats.host_index_bytes as f64 / (1024.0 * 1024.0)
    );

    let mut c = Criterion::default().configure_from_args();
    let at = LocalTime::new(1, 10, 0).unwrap();
    let exact_hit = list_name(123_457);
    let wildcard_hit = list_name(500_000).replace("*.", "deep.sub.");
    let queries = [
        (
            "dns blocklist hit",
            Request::new(Protocol::Dns, at).host(&exact_hit),
        ),
        (
            "dns wildcard hit",
            Request::new(Protocol::Dns, at).host(&wildcard_hit),
        ),
        (
            "dns miss (deep name)",
            Request::new(Protocol::Dns, at).host("a.b.c.d.e.nothing.example"),
        ),
        (
            "https sni",
            Request::new(Protocol::Https, at)
                .host("app6.example")
                .port(443)
                .dst("203.0.113.5".parse().unwrap()),
        ),
        (
            "http host+path",
            Request::new(Protocol::Http, at)
                .host("intranet3.example")
                .port(80)
                .method("GET")
                .path("/public3/index.html"),
        ),
        (
            "tcp dst+port",
            Request::new(Protocol::Tcp, at)
                .dst("10.3.0.7".parse().unwrap())
                .port(1003),
        ),
        (
            "tcp default",
            Request::new(Protocol::Tcp, at)
                .dst("198.51.100.1".parse().unwrap())
                .port(22),
        ),
    ];
    // The hits must really be decided by the blocklist rule, or the bench measures a miss.
    for request in &queries[..2] {
        assert_eq!(
            rules.decide(&request.1).rule.id,
            "blocklist",
            "{}",
            request.0
        );
    }
    let mut group = c.benchmark_group("decide");
    for (name, request) in &queries {
        group.bench_function(*name, |b| {
            b.iter(|| black_box(rules.decide(black_box(request)).action))
        });
    }
    group.finish();

    // The same queries against rule sets of very different sizes: the time should not follow
    // the rule count, because only indexed candidates are looked at.
    let mut group = c.benchmark_group("decide by rule count");
    for count in [10, 1_000, 100_000] {
        let text: String = (0..count)
            .map(|i| match i % 3 {
                0 => format!("allow https host www{i}.corp.example\n"),
                1 => format!("deny any host *.t{i}.example\n"),
                _ => format!(
                    "allow tcp dst 10.{}.{}.0/24 port {}\n",
                    i % 250,
                    (i / 250) % 250,
                    1 + i % 60000
                ),
            })
            .collect();
        let set = RuleSet::from_text("scale.rules", &text, &rules::NoFiles).expect("valid");
        let https = Request::new(Protocol::Https, at)
            .host("www.other.example")
            .port(443);
        let tcp = Request::new(Protocol::Tcp, at)
            .dst("10.7.0.9".parse().unwrap())
            .port(7);
        group.bench_function(format!("https miss, {count} rules"), |b| {
            b.iter(|| black_box(set.decide(black_box(&https)).action))
        });
        group.bench_function(format!("tcp miss, {count} rules"), |b| {
            b.iter(|| black_box(set.decide(black_box(&tcp)).action))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    group.bench_function("1000 rules + 1M-name list", |b| {
        b.iter_batched(
            || (),
            |()| compile(&rules_text, &lists),
            BatchSize::PerIteration,
        )
    });
    group.finish();
    c.final_summary();
}
