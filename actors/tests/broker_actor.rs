//! The broker partition actor: acknowledged appends are durable and readable, a full partition
//! refuses (retryably) until its consumer commits, parked fetches wake on new data, and a restart
//! replays from the committed offset.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and benchmark code may panic

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use telemetry_actors::broker::{
    AppendRefusal, AppendReply, BrokerMsg, BrokerPartition, BrokerPartitionArgs, FetchReply,
    LogConfig, COLLECTOR_CONSUMER,
};
use telemetry_actors::stats::PipelineStats;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        max_unconsumed_bytes: 4096,
        max_record_bytes: 1024,
        ..LogConfig::default()
    }
}

async fn start(dir: &std::path::Path) -> ActorRef<BrokerMsg> {
    let args = BrokerPartitionArgs {
        partition: 3,
        dir: dir.to_path_buf(),
        config: config(),
        stats: Arc::new(PipelineStats::default()),
        disk: Arc::new(telemetry_storage::disk::DiskGuard::new(dir, 0)),
    };
    Actor::spawn(None, BrokerPartition, args)
        .await
        .expect("spawn")
        .0
}

async fn append(b: &ActorRef<BrokerMsg>, payload: Vec<u8>) -> AppendReply {
    let payload = Arc::new(payload);
    match b
        .call(
            |reply| BrokerMsg::Append { payload, reply },
            Some(Duration::from_secs(5)),
        )
        .await
    {
        Ok(CallResult::Success(r)) => r,
        other => panic!("append: {other:?}"),
    }
}

async fn fetch(b: &ActorRef<BrokerMsg>, from: u64, wait: Duration) -> FetchReply {
    match b
        .call(
            |reply| BrokerMsg::Fetch {
                from,
                max_bytes: 1 << 20,
                wait,
                reply,
            },
            Some(Duration::from_secs(5)),
        )
        .await
    {
        Ok(CallResult::Success(r)) => r,
        _ => panic!("fetch failed"),
    }
}

async fn commit(b: &ActorRef<BrokerMsg>, offset: u64) {
    let consumer = COLLECTOR_CONSUMER.to_string();
    let res = b
        .call(
            |reply| BrokerMsg::Commit {
                consumer,
                offset,
                reply,
            },
            Some(Duration::from_secs(5)),
        )
        .await;
    assert!(matches!(res, Ok(CallResult::Success(Ok(())))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_ack_fetch_commit_refuse_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = start(dir.path()).await;

    // Concurrent appends share group commits and are acknowledged with dense offsets.
    let mut handles = Vec::new();
    for i in 0..10u8 {
        let b = b.clone();
        handles.push(tokio::spawn(async move { append(&b, vec![i; 100]).await }));
    }
    let mut offsets = Vec::new();
    for h in handles {
        match h.await.expect("join") {
            AppendReply::Ack(o) => offsets.push(o),
            other => panic!("{other:?}"),
        }
    }
    offsets.sort_unstable();
    assert_eq!(offsets, (0..10).collect::<Vec<_>>());
    assert_eq!(fetch(&b, 0, Duration::ZERO).await.records.len(), 10);

    // Fill to the bound: the refusal is the retryable kind, and nothing was written for it.
    let mut accepted = 10;
    loop {
        match append(&b, vec![7; 100]).await {
            AppendReply::Ack(_) => accepted += 1,
            AppendReply::Refused(AppendRefusal::Full { .. }) => break,
            other => panic!("{other:?}"),
        }
        assert!(accepted < 100, "never refused");
    }
    assert_eq!(fetch(&b, 0, Duration::ZERO).await.records.len(), accepted);
    commit(&b, 5).await;
    assert!(
        matches!(append(&b, vec![1; 100]).await, AppendReply::Ack(_)),
        "room after commit"
    );
    let next = accepted as u64 + 1;

    // A fetch at the end parks and is woken by the next durable append.
    let b2 = b.clone();
    let parked = tokio::spawn(async move { fetch(&b2, next, Duration::from_secs(5)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = Instant::now();
    assert_eq!(append(&b, b"wake".to_vec()).await, AppendReply::Ack(next));
    let woke = parked.await.expect("join");
    assert_eq!(woke.records, vec![(next, b"wake".to_vec())]);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "woken by the append, not the timeout"
    );
    // An empty wait expires with nothing.
    assert!(fetch(&b, next + 1, Duration::from_millis(20))
        .await
        .records
        .is_empty());

    // Restart: the committed offset and everything after it are still there.
    b.stop_and_wait(None, None).await.expect("stop");
    let b = start(dir.path()).await;
    let status = match b.call(BrokerMsg::Status, None).await {
        Ok(CallResult::Success(s)) => s,
        _ => panic!("status"),
    };
    assert_eq!(status.committed_offset, 5);
    assert_eq!(status.next_offset, next + 1);
    let replay = fetch(&b, status.committed_offset, Duration::ZERO).await;
    assert_eq!(replay.records.first().map(|r| r.0), Some(5));
    assert_eq!(replay.records.last().map(|r| r.0), Some(next));
    b.stop_and_wait(None, None).await.expect("stop");
}
