//! A link cut between two network namespaces while a remote job runs. The test creates its own namespace and
//! veth pair (addresses only on them), runs `edgescope-runner` inside, cuts the link mid-job, restores it, and
//! removes everything. It needs root and iproute2; without them it says so and passes nothing off as tested.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgescope::net::RemoteRunner;
use edgescope::record::{RunEvent, RunMode};
use edgescope::runtime::{CancelToken, Runner, RuntimeError};

const TOKEN: &str = "netns-test-token-0123456789";

fn ip(args: &[&str]) -> bool {
    Command::new("ip").args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// The namespace, veth pair and runner of one test; removed on drop, whatever happened.
struct Testbed {
    namespace: String,
    host_link: String,
    runner: Option<Child>,
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if let Some(mut runner) = self.runner.take() {
            let _ = runner.kill();
            let _ = runner.wait();
        }
        ip(&["link", "del", &self.host_link]);
        ip(&["netns", "del", &self.namespace]);
    }
}

#[test]
fn a_link_cut_mid_job_keeps_the_samples_and_the_runner_serves_again() {
    let is_root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"));
    if !is_root || !ip(&["netns", "list"]) {
        eprintln!("skipped: creating network namespaces needs root and iproute2");
        return;
    }
    let id = std::process::id() % 200 + 20;
    let mut bed = Testbed { namespace: format!("edgescope-t{id}"), host_link: format!("esc{id}h"), runner: None };
    let peer_link = format!("esc{id}p");
    let (host_ip, runner_ip) = (format!("10.231.{id}.1"), format!("10.231.{id}.2"));
    let ns = bed.namespace.clone();
    let (host_cidr, runner_cidr) = (format!("{host_ip}/30"), format!("{runner_ip}/30"));
    let setup = [
        vec!["netns", "add", &ns],
        vec!["link", "add", &bed.host_link, "type", "veth", "peer", "name", &peer_link],
        vec!["link", "set", &peer_link, "netns", &ns],
        vec!["addr", "add", &host_cidr, "dev", &bed.host_link],
        vec!["link", "set", &bed.host_link, "up"],
        vec!["-n", &ns, "addr", "add", &runner_cidr, "dev", &peer_link],
        vec!["-n", &ns, "link", "set", &peer_link, "up"],
        vec!["-n", &ns, "link", "set", "lo", "up"],
    ];
    for step in &setup {
        assert!(ip(step), "ip {}", step.join(" "));
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).expect("token");
    let address = format!("{runner_ip}:7878");
    let runner = Command::new("ip")
        .args(["netns", "exec", &ns, env!("CARGO_BIN_EXE_edgescope-runner"), "--listen", &address, "--token-file"])
        .arg(&token_file)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .stderr(Stdio::null())
        .spawn()
        .expect("start the runner in the namespace");
    bed.runner = Some(runner);
    let started = Instant::now();
    while RemoteRunner::new(&address, TOKEN.into()).device().is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "the runner in the namespace did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A long job; cut the link once it has streamed a checkpoint.
    let job = common::job("heavy.onnx", "fmnist500", RunMode::Trace);
    let (sender, progress) = crossbeam_channel::bounded(64);
    let client_address = address.clone();
    let client = std::thread::spawn(move || {
        let mut runner = RemoteRunner::new(&client_address, TOKEN.into());
        runner.run(&job, &mut |e| drop(sender.try_send(e)), &CancelToken::new())
    });
    loop {
        if let Ok(RunEvent::Progress { done, .. }) = progress.recv_timeout(Duration::from_secs(60))
            && done >= 250
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no progress through the link");
    }
    assert!(ip(&["link", "set", &bed.host_link, "down"]), "cut the link");
    let result = client.join().expect("the client does not panic");
    match result.expect_err("the link is cut") {
        RuntimeError::Interrupted { message, partial } => {
            assert!(message.contains(&address) && message.contains("no word"), "{message}");
            assert!(partial.trace.len() >= 200, "{} samples kept", partial.trace.len());
            partial.trace.validate().expect("valid partial trace");
        }
        other => panic!("expected an interrupted run, got {other}"),
    }

    // The link comes back: the runner is still there and serves a new client.
    assert!(ip(&["link", "set", &bed.host_link, "up"]), "restore the link");
    let started = Instant::now();
    loop {
        match RemoteRunner::new(&address, TOKEN.into()).device() {
            Ok(device) => {
                assert!(device.ort_version.starts_with("1.31"));
                break;
            }
            Err(e) => assert!(started.elapsed() < Duration::from_secs(60), "runner unreachable after restore: {e}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
