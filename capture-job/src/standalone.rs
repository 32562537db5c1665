//! Standalone mode of `nightcap capture`: the targets named by the flags (interfaces, named
//! network namespaces, pod IPs reached as `--attach` says), the filter, rotation and limits from the flags, until a limit
//! or SIGTERM/SIGINT (which close and upload the open file).

use nightcap_ebpf::netns;
use nightcap_storage::{StoreConfig, UploadOptions};
use tracing::info;

use crate::{
    Attach, Capture, CaptureArgs, CaptureOptions, Error, Result, Summary, options, output,
    target::{self, TargetMeta, TargetSpec},
};

/// Everything checked before anything is created.
struct Plan {
    opts: CaptureOptions,
    targets: Vec<TargetSpec>,
    store: StoreConfig,
    upload: UploadOptions,
}

fn plan(args: &CaptureArgs) -> Result<Plan> {
    let identity = options::identity(args)?;
    let opts = options::standalone(args, identity)?;
    let targets = targets(args)?;
    let store = StoreConfig::from_url(&args.output)?;
    let upload = options::upload(args)?;
    Ok(Plan {
        opts,
        targets,
        store,
        upload,
    })
}

/// The targets of the flags, each resolved and its interface checked now.
fn targets(args: &CaptureArgs) -> Result<Vec<TargetSpec>> {
    let mut targets = Vec::new();
    for name in &args.netns {
        targets.push(TargetSpec::Netns {
            name: name.clone(),
            interface: args.interface.clone(),
        });
    }
    for ip in &args.pod_ip {
        targets.push(match args.attach {
            Attach::Host => TargetSpec::HostSide(*ip),
            Attach::Netns => TargetSpec::PodIp(*ip),
        });
    }
    if targets.is_empty() {
        match &args.interface {
            Some(i) => targets.push(TargetSpec::Interface(i.clone())),
            None => {
                return Err(Error::Invalid(
                    "nothing to capture: pass --interface IF, --netns NAME or --pod-ip IP".into(),
                ));
            }
        }
    }
    for t in &targets {
        let r = target::resolve(t)?;
        let ifaces = netns::run_in(r.netns.as_deref(), netns::interfaces).map_err(|source| {
            Error::Target {
                target: r.label(),
                source,
            }
        })?;
        if !ifaces.contains_key(&r.interface) {
            return Err(Error::Invalid(format!(
                "no interface {:?} in network namespace {} (it has: {}); pass --interface",
                r.interface,
                r.netns_label,
                ifaces.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    Ok(targets)
}

/// Runs standalone mode: prints one JSON line with the [`Summary`] when the capture ran; fails
/// (exit ≠ 0) on bad input before anything is created, or when files could not be uploaded.
pub(crate) fn run(args: &CaptureArgs) -> Result<()> {
    let plan = plan(args)?;
    let runtime = crate::runtime(args.spool_direct_io)?;
    let summary = runtime.block_on(capture(plan, &args.output))?;
    output::finish(
        &summary,
        "run again with the same --spool-dir to upload them",
    )
}

async fn capture(plan: Plan, output: &str) -> Result<Summary> {
    // Before anything is captured: a signal from the first moment on closes and uploads the
    // open file.
    let shutdown = nightcap_process::shutdown_signal();
    let (opened, uploader) = output::open(output, &plan.store, plan.upload).await?;
    let spool_dir = plan.opts.engine.spool_dir.clone();
    let spool_existed = spool_dir.exists();
    let capture = Capture::start(plan.opts, uploader, opened.store, opened.prefix)?;
    for t in &plan.targets {
        if let Err(e) = capture.add_target(t, &TargetMeta::default()) {
            capture.stop();
            let _ = capture.finish().await;
            if !spool_existed {
                // Only removes an empty directory: nothing half-written is left, nothing else lost.
                let _ = std::fs::remove_dir(&spool_dir);
            }
            return Err(e);
        }
    }
    tokio::select! {
        () = shutdown => info!("Shutdown signal: closing and uploading the open file."),
        () = capture.ended() => {}
    }
    capture.stop();
    capture.finish().await
}
