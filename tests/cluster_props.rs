//! The shared ledger script against a real Redis: random interleavings of several clients'
//! takes, releases and store reports (throttles included) never put more than `limit` sends
//! in any window (counted as the store counts: window plus one step, on Redis's clock), never
//! grant while a pause lasts, and never have two probes out at once.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
use redis::Value;
use support::redis::{connect, shared_url, unique_name};

const LEDGER: &str = include_str!("../src/cluster/ledger.lua");
const TAIL: usize = 9;

#[derive(Debug, Clone)]
enum Op {
    /// A client asks for a send, leaving `reserve` untouched.
    Take { client: usize, reserve: u64 },
    /// A client ends its oldest grant: sent, or given back.
    Release { client: usize, sent: bool },
    /// The store answered a client's oldest grant: what it says is left, or a 509.
    Observe {
        client: usize,
        left: Option<u64>,
        throttled: bool,
    },
    /// Time passes.
    Sleep { ms: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, 0..3u64).prop_map(|(client, reserve)| Op::Take { client, reserve }),
        3 => (0..3usize, any::<bool>()).prop_map(|(client, sent)| Op::Release { client, sent }),
        2 => (0..3usize, proptest::option::of(0..12u64), prop::bool::weighted(0.2))
            .prop_map(|(client, left, throttled)| Op::Observe { client, left, throttled }),
        2 => (0..25u64).prop_map(|ms| Op::Sleep { ms }),
    ]
}

fn int(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::Int(n)) => *n,
        Some(Value::BulkString(b)) => std::str::from_utf8(b).unwrap().parse().unwrap(),
        other => panic!("not a number: {other:?}"),
    }
}

struct Ledger {
    script: redis::Script,
    keys: [String; 4],
    limit: u64,
    window_ms: i64,
}

impl Ledger {
    async fn run(
        &self,
        con: &mut redis::aio::MultiplexedConnection,
        op: &str,
        args: &[i64],
    ) -> Vec<Value> {
        let mut inv = self.script.prepare_invoke();
        for k in &self.keys {
            inv.key(k);
        }
        inv.arg(op).arg(self.limit).arg(self.window_ms).arg("0");
        for a in args {
            inv.arg(*a);
        }
        match inv.invoke_async(con).await.unwrap() {
            Value::Array(values) => values,
            other => panic!("{other:?}"),
        }
    }
}

async fn check(ops: Vec<Op>, limit: u64) -> Result<(), TestCaseError> {
    let name = unique_name("ledger-prop");
    let prefix = format!("bcproxy:{{{name}}}:v1:");
    let ledger = Ledger {
        script: redis::Script::new(LEDGER),
        keys: ["sends", "seq", "state", "instances"].map(|k| format!("{prefix}{k}")),
        limit,
        window_ms: 240,
    };
    let hold = ledger.window_ms + ledger.window_ms / 60;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(connect(&shared_url()).await);
    }
    // Each client's grants not yet ended: (id, probe).
    let mut outstanding: Vec<Vec<(i64, bool)>> = vec![Vec::new(); 3];
    // Sends that count: id -> Redis time of the grant.
    let mut sends: HashMap<i64, i64> = HashMap::new();
    let mut paused_until: i64 = 0;
    for op in ops {
        match op {
            Op::Sleep { ms } => tokio::time::sleep(Duration::from_millis(ms)).await,
            Op::Take { client, reserve } => {
                let v = ledger
                    .run(&mut clients[client], "take", &[reserve as i64])
                    .await;
                let now = int(v.get(v.len() - TAIL + 7));
                if int(v.first()) == 1 {
                    let (id, probe) = (int(v.get(1)), int(v.get(2)) == 1);
                    prop_assert!(
                        now >= paused_until,
                        "granted at {now}, paused until {paused_until}"
                    );
                    if probe {
                        let out = outstanding.iter().flatten().filter(|(_, p)| *p).count();
                        prop_assert_eq!(out, 0, "a second probe while one is out");
                    }
                    sends.insert(id, now);
                    outstanding[client].push((id, probe));
                    let counted = sends.values().filter(|&&t| t > now - hold).count() as u64;
                    prop_assert!(
                        counted <= limit,
                        "{} sends within a window (limit {})",
                        counted,
                        limit
                    );
                }
            }
            Op::Release { client, sent } => {
                if outstanding[client].is_empty() {
                    continue;
                }
                let (id, _) = outstanding[client].remove(0);
                ledger
                    .run(&mut clients[client], "release", &[id, i64::from(sent)])
                    .await;
                if !sent {
                    sends.remove(&id);
                }
            }
            Op::Observe {
                client,
                left,
                throttled,
            } => {
                let Some(&(id, _)) = outstanding[client].first() else {
                    continue;
                };
                let left = left.map_or(-1, |l| l as i64);
                let v = ledger
                    .run(
                        &mut clients[client],
                        "observe",
                        &[id, left, -1, -1, -1, i64::from(throttled), 0, 0, 500],
                    )
                    .await;
                let now = int(v.get(v.len() - TAIL + 7));
                if int(v.first()) == 1 {
                    paused_until = paused_until.max(now + int(v.get(1)));
                }
                // The answer came: the grant is over (it was sent).
                outstanding[client].remove(0);
                ledger.run(&mut clients[client], "release", &[id, 1]).await;
            }
        }
    }
    Ok(())
}

/// The case CI found: a send made before the pause comes back throttled while the probe is
/// out; the pause must not re-arm and let a second probe go.
#[test]
fn a_late_throttle_never_lets_a_second_probe_go() {
    let throttle = |client| Op::Observe {
        client,
        left: None,
        throttled: true,
    };
    let take = |client| Op::Take { client, reserve: 0 };
    let ops = vec![
        take(1),
        take(0),
        throttle(1),
        // Past the pause (one step: 4 ms): client 2 probes.
        Op::Sleep { ms: 10 },
        take(2),
        throttle(0),
        Op::Sleep { ms: 20 },
        take(0),
        take(1),
    ];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(check(ops, 7)).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn interleaved_clients_never_overspend(ops in prop::collection::vec(op(), 10..60), limit in 2..10u64) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(check(ops, limit))?;
    }
}
