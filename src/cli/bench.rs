//! `plansync bench`: runs the end-to-end scenarios on the local simulators and prints a
//! table, or one JSON object with `--json`. Figures, not verdicts: the exit code says only
//! whether the scenarios ran.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::bench::{self, BenchOptions, BenchReport};

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Run one scenario (default: all).
    #[arg(long, value_parser = ["burst", "steady", "reconcile", "poll_diff", "reverse"])]
    pub scenario: Option<String>,
    /// Small sizes that finish in seconds.
    #[arg(long)]
    pub quick: bool,
    /// Simulated Anaplan latency per call: 0 (loopback) or e.g. 80 for a WAN.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Records changed in the burst and in the reverse scenario (default 20,000; 1,000 with
    /// --quick).
    #[arg(long)]
    pub records: Option<usize>,
    /// Records seeded on both sides for reconcile (default 1,000,000; 2,000 with --quick).
    #[arg(long)]
    pub reconcile_records: Option<usize>,
    /// Fields changed per record in the burst and in the reverse scenario (1 to 5).
    #[arg(long, default_value_t = 5)]
    pub fields: usize,
    /// CRM commits per second in the steady scenario (default 2,000; 200 with --quick).
    #[arg(long)]
    pub rate: Option<u32>,
    /// How long the steady scenario runs, in seconds (default 60; 3 with --quick).
    #[arg(long)]
    pub seconds: Option<u64>,
    /// The executable the reconcile scenario runs `run` with (default: this plansync), e.g.
    /// another build to compare, or a wrapper script that profiles it (the scenario stops it
    /// with SIGTERM: a wrapper must pass that on, or the engine outlives the run).
    #[arg(long)]
    pub engine_exe: Option<PathBuf>,
    /// Where the engine's SQLite files go.
    #[arg(long, default_value = "plansync-bench")]
    pub dir: PathBuf,
    /// The rule files.
    #[arg(long, default_value = "rules")]
    pub rules: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut options = if args.quick {
        BenchOptions::quick(args.rules.clone(), args.dir.clone())
    } else {
        BenchOptions::full(args.rules.clone(), args.dir.clone())
    };
    options.anaplan_latency = Duration::from_millis(args.latency_ms);
    options.burst_fields = args.fields;
    options.reverse_fields = args.fields;
    if let Some(n) = args.records {
        options.burst_records = n;
        options.reverse_records = n;
    }
    if let Some(exe) = &args.engine_exe {
        options.engine_exe = exe.clone();
    }
    if let Some(n) = args.reconcile_records {
        options.reconcile_records = n;
    }
    if let Some(r) = args.rate {
        options.steady_rate = r;
    }
    if let Some(s) = args.seconds {
        options.steady_seconds = s;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(bench::run(&options, args.scenario.as_deref()))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", render(&report, &options));
    }
    Ok(ExitCode::SUCCESS)
}

fn render(report: &BenchReport, options: &BenchOptions) -> String {
    let mut out = String::new();
    let latency = if options.anaplan_latency.is_zero() {
        "loopback".to_string()
    } else {
        format!(
            "{} ms per Anaplan call",
            options.anaplan_latency.as_millis()
        )
    };
    out.push_str(&format!("plansync bench ({latency})\n"));
    if let Some(b) = &report.burst {
        out.push_str(&format!(
            "\nburst: {} field changes ({} records)\n  plansync  {:>10.1} s  {:>8} Anaplan calls  {} rate-limited\n  naive     {:>10.1} s  {:>8} Anaplan calls (extrapolated from {} timed calls)\n  calls ratio naive / plansync: {:.0}x\n",
            b.field_changes,
            b.records,
            b.seconds,
            b.anaplan_calls,
            b.rate_limited,
            b.naive_seconds,
            b.naive_calls,
            b.naive_sample,
            b.calls_ratio
        ));
        for (kind, n) in &b.anaplan_calls_by_kind {
            out.push_str(&format!("    {kind:<14} {n}\n"));
        }
    }
    if let Some(s) = &report.steady {
        out.push_str(&format!(
            "\nsteady: {} commits/s for {} s ({} commits, {} writes measured)\n  commit → Anaplan ack  p50 {:.0} ms  p95 {:.0} ms  p99 {:.0} ms  max {:.0} ms\n  outbox depth per second: {:?}\n",
            s.rate_per_second, s.seconds, s.events, s.samples, s.p50_ms, s.p95_ms, s.p99_ms, s.max_ms, s.outbox_depth
        ));
    }
    if let Some(p) = &report.poll_diff {
        out.push_str(&format!(
            "\npoll_diff: one Anaplan poll of {} cells ({} items), {} planner edits in it\n  poll → edits decided and committed  {:.1} s   (first reconciliation of the model: {:.1} s)\n",
            p.cells, p.records, p.edits, p.seconds, p.setup_seconds
        ));
    }
    if let Some(r) = &report.reconcile {
        out.push_str(&format!(
            "\nreconcile: the engine's first run (its own process) over {} records on each side\n  start → reconciliation committed  {:.1} s   (the engine's own timing: {:.1} s)\n  engine peak RSS  {:.0} MiB   engine CPU  {:.1} s\n  {} values decided, {} fields agreeing, {} writes queued, {} exceptions\n  (seeding both simulators: {:.1} s)\n",
            r.records,
            r.seconds,
            r.engine_seconds,
            r.peak_rss_mb,
            r.engine_cpu_seconds,
            r.changes,
            r.fields_agreed,
            r.writes_queued,
            r.exceptions_raised,
            r.setup_seconds
        ));
        out.push_str(&format!(
            "  CRM read through {}: {} query calls, {} Bulk API 2.0 calls\n",
            if r.crm_read == "bulk_query" {
                "a Bulk API 2.0 query job"
            } else {
                "REST pages"
            },
            r.crm_query_calls,
            r.crm_bulk_calls
        ));
        if let Some(rest) = &r.rest_read {
            out.push_str(&format!(
                "  the same first run reading the CRM through REST pages: {:.1} s (engine {:.1} s), peak RSS {:.0} MiB, CPU {:.1} s, {} query calls\n",
                rest.seconds, rest.engine_seconds, rest.peak_rss_mb, rest.engine_cpu_seconds, rest.crm_query_calls
            ));
        }
    }
    if let Some(r) = &report.reverse {
        out.push_str(&format!(
            "\nreverse: {} field changes ({} records) made by a planner in Anaplan, found by one poll, written to the CRM\n  poll → all acknowledged and read back from the CRM  {:.1} s   (poll done {:.1} s, decided {:.1} s; the planner's writes: {:.1} s, {} Anaplan calls)\n  {} CRM calls  {} Anaplan calls  {} writes acknowledged  {} exceptions  {} mismatches  {} echoes\n",
            r.field_changes,
            r.records,
            r.seconds,
            r.poll_seconds,
            r.decided_seconds,
            r.planner_seconds,
            r.planner_calls,
            r.crm_calls,
            r.anaplan_calls,
            r.writes_acked,
            r.exceptions,
            r.mismatches,
            r.echoes
        ));
        for (kind, n) in &r.crm_calls_by_kind {
            out.push_str(&format!("    {kind:<14} {n}\n"));
        }
    }
    out
}
