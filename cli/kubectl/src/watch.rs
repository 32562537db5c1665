//! `watch`: one live line per node (packets, bytes, files uploaded, drops) until the capture
//! ends; plain lines, printed when something changed, when stdout is not a terminal.

use std::{
    collections::BTreeMap,
    io::{IsTerminal, Write},
    time::Duration,
};

use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use nightcap_api::{NodeCaptureStatus, PacketCapture, Phase};
use tracing::warn;

use crate::{backend::Backend, error::Result, view::human_bytes};

/// How a watched capture ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    /// The final phase.
    pub phase: Phase,
    /// The one-line summary printed last.
    pub summary: String,
}

impl Ending {
    /// 0 for Succeeded, 1 for Failed or Stopped.
    pub fn exit_code(&self) -> i32 {
        i32::from(self.phase != Phase::Succeeded)
    }
}

/// The live line of one node.
pub fn node_line(node: &str, n: &NodeCaptureStatus) -> String {
    let files = n.files.len();
    format!(
        "{node}: {}, {} packets, {}, {files} file{} uploaded, {} drops",
        n.state.map_or("Scheduled".into(), |s| format!("{s:?}")),
        n.packets,
        human_bytes(n.bytes),
        if files == 1 { "" } else { "s" },
        n.drops,
    )
}

/// The capture's own line: phase and totals.
pub fn capture_line(pc: &PacketCapture) -> String {
    let st = pc.status.clone().unwrap_or_default();
    let phase = st.phase.map_or("Pending".into(), |p| format!("{p:?}"));
    let packets: u64 = st.nodes.values().map(|n| n.packets).sum();
    let bytes: u64 = st.nodes.values().map(|n| n.bytes).sum();
    let files: usize = st.nodes.values().map(|n| n.files.len()).sum();
    let mut line = format!(
        "packetcapture/{} {phase}: {} node{}, {packets} packets, {}, {files} file{}",
        pc.metadata.name.as_deref().unwrap_or_default(),
        st.nodes.len(),
        if st.nodes.len() == 1 { "" } else { "s" },
        human_bytes(bytes),
        if files == 1 { "" } else { "s" },
    );
    if let (Some(p), Some(m)) = (st.phase, &st.message)
        && p.is_finished()
    {
        line.push_str(&format!(" ({m})"));
    }
    line
}

/// Follows the capture until its phase is final.
pub async fn watch(backend: &Backend, ns: &str, name: &str) -> Result<Ending> {
    let tty = std::io::stdout().is_terminal();
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template("{spinner} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let header = tty.then(|| multi.add(ProgressBar::new_spinner().with_style(style.clone())));
    let mut bars: BTreeMap<String, ProgressBar> = BTreeMap::new();
    let mut printed: BTreeMap<String, String> = BTreeMap::new();
    let mut changes = backend.changes(ns, name);
    while let Some(next) = changes.next().await {
        let pc = match next {
            Ok(pc) => pc,
            Err(e) => {
                warn!(error = %e, "Watch interrupted; retrying.");
                continue;
            }
        };
        let st = pc.status.clone().unwrap_or_default();
        let mut lines: Vec<(String, String)> = vec![(String::new(), capture_line(&pc))];
        lines.extend(st.nodes.iter().map(|(k, n)| (k.clone(), node_line(k, n))));
        if let Some(h) = &header {
            h.set_message(lines[0].1.clone());
            h.tick();
            for (node, line) in &lines[1..] {
                let bar = bars.entry(node.clone()).or_insert_with(|| {
                    let b = multi.add(ProgressBar::new_spinner().with_style(style.clone()));
                    b.enable_steady_tick(Duration::from_millis(200));
                    b
                });
                bar.set_message(line.clone());
            }
        } else {
            // Node lines first, so the capture's own line (the summary at the end) comes last.
            lines.rotate_left(1);
            let mut stdout = std::io::stdout().lock();
            for (key, line) in &lines {
                if printed.get(key) != Some(line) {
                    let _ = writeln!(stdout, "{line}");
                    printed.insert(key.clone(), line.clone());
                }
            }
            let _ = stdout.flush();
        }
        if let Some(phase) = st.phase.filter(|p| p.is_finished()) {
            let summary = capture_line(&pc);
            for b in bars.values() {
                b.finish();
            }
            if let Some(h) = &header {
                h.finish_and_clear();
                println!("{summary}");
            }
            return Ok(Ending { phase, summary });
        }
    }
    Err(crate::error::Error::Config(format!(
        "the watch of {name} ended before the capture did"
    )))
}

#[cfg(test)]
mod tests {
    use nightcap_api::{CaptureFile, NodeCaptureState};

    use super::*;

    #[test]
    fn node_lines_carry_every_counter() {
        let n = NodeCaptureStatus {
            state: Some(NodeCaptureState::Capturing),
            packets: 120,
            bytes: 3 << 20,
            drops: 2,
            files: vec![CaptureFile::default()],
            ..NodeCaptureStatus::default()
        };
        assert_eq!(
            node_line("node-a", &n),
            "node-a: Capturing, 120 packets, 3.0MiB, 1 file uploaded, 2 drops"
        );
    }

    #[test]
    fn only_success_exits_zero() {
        for (phase, code) in [
            (Phase::Succeeded, 0),
            (Phase::Failed, 1),
            (Phase::Stopped, 1),
        ] {
            let e = Ending {
                phase,
                summary: String::new(),
            };
            assert_eq!(e.exit_code(), code, "{phase:?}");
        }
    }
}
