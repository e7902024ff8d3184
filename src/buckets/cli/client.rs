//! `cartero buckets ls|mb|rb|upload|download|rm|help`: one client command per run.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::buckets::client::{Client, ClientError};
use crate::buckets::store::Name;
use crate::buckets::wire::Vocabulary;

/// Which server to talk to, and how.
#[derive(clap::Args, Clone)]
pub struct Target {
    /// The server's host name or address.
    #[arg(short, long, default_value = "127.0.0.1")]
    server: String,
    /// The server's port.
    #[arg(short, long, default_value_t = 1234)]
    port: u16,
    /// The request words to use: `codes` (CREATE_B, UPLOAD...) or `eafit` (NEW_BUCKET,...).
    #[arg(long, default_value = "codes")]
    vocabulary: Vocabulary,
    /// How long any single read or write may wait.
    #[arg(long, default_value = "30s", value_parser = crate::cli::common::duration)]
    timeout: Duration,
}

/// Why a client verb failed: one line for standard error.
#[derive(Debug, thiserror::Error)]
enum VerbError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Local(String),
}

pub enum Verb {
    Ls { bucket: Option<String> },
    Mb { bucket: String },
    Rb { bucket: String },
    Rm { bucket: String, name: String },
    Upload { bucket: String, path: PathBuf, name: Option<String> },
    Download { bucket: String, name: String, dest: Option<PathBuf> },
    Help,
}

pub fn run(target: Target, verb: Verb) -> ExitCode {
    let runtime = match crate::cli::common::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(execute(&target, verb)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cartero: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(target: &Target, verb: Verb) -> Result<(), VerbError> {
    let mut client =
        Client::connect(&target.server, target.port, target.vocabulary).await?.with_timeout(target.timeout);
    match verb {
        Verb::Help => {
            for line in client.help().await? {
                println!("{line}");
            }
        }
        Verb::Ls { bucket: None } => {
            for b in client.list_buckets().await? {
                println!("{b}");
            }
        }
        Verb::Ls { bucket: Some(bucket) } => {
            for f in client.list_files(Some(&bucket)).await? {
                println!("{} {}", f.name, f.size);
            }
        }
        Verb::Mb { bucket } => {
            client.create_bucket(&bucket).await?;
            println!("created bucket {bucket}");
        }
        Verb::Rb { bucket } => {
            client.delete_bucket(&bucket).await?;
            println!("deleted bucket {bucket}");
        }
        Verb::Rm { bucket, name } => {
            client.delete_file(&bucket, &name).await?;
            println!("deleted {bucket}/{name}");
        }
        Verb::Upload { bucket, path, name } => upload(&mut client, &bucket, &path, name).await?,
        Verb::Download { bucket, name, dest } => download(&mut client, &bucket, &name, dest).await?,
    }
    let _ = client.quit().await;
    Ok(())
}

/// A progress bar on standard error when it is a terminal, else nothing.
fn progress_bar(size: u64) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(size);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}") {
        bar.set_style(style);
    }
    Some(bar)
}

async fn upload(client: &mut Client, bucket: &str, path: &Path, name: Option<String>) -> Result<(), VerbError> {
    let name = match name {
        Some(name) => name,
        None => path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_owned)
            .ok_or_else(|| VerbError::Local(format!("{} has no file name: give one after it", path.display())))?,
    };
    Name::parse(name.as_bytes()).map_err(|e| {
        VerbError::Local(format!("{name:?} cannot be a file name on the server ({e}): give another after the path"))
    })?;
    let file = tokio::fs::File::open(path).await.map_err(|e| VerbError::Local(format!("{}: {e}", path.display())))?;
    let meta = file.metadata().await.map_err(|e| VerbError::Local(format!("{}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(VerbError::Local(format!("{} is not a regular file", path.display())));
    }
    let size = meta.len();
    let bar = progress_bar(size);
    let result = client.upload(bucket, &name, size, file, |sent| bar.iter().for_each(|b| b.set_position(sent))).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result?;
    println!("uploaded {} -> {bucket}/{name} ({size} bytes)", path.display());
    Ok(())
}

/// Where a download goes: `dest` itself, or `dest/<name>` when `dest` is a directory, or
/// `./<name>` when no destination is given. `name` is a valid [`Name`], so it cannot lead
/// out of the directory.
fn destination(name: &str, dest: Option<PathBuf>) -> PathBuf {
    match dest {
        None => PathBuf::from(".").join(name),
        Some(dir) if dir.is_dir() => dir.join(name),
        Some(path) => path,
    }
}

async fn download(client: &mut Client, bucket: &str, name: &str, dest: Option<PathBuf>) -> Result<(), VerbError> {
    Name::parse(name.as_bytes()).map_err(|e| VerbError::Local(format!("bad name {name:?}: {e}")))?;
    let target = destination(name, dest);
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = target
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| VerbError::Local(format!("{} is not a file path", target.display())))?;
    // The bytes go to a temporary file beside the destination, renamed over it at the end.
    let tmp = dir.join(format!(".{file_name}.cartero-{}.part", std::process::id()));
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .await
        .map_err(|e| VerbError::Local(format!("cannot write in {}: {e}", dir.display())))?;
    let bar = std::cell::RefCell::new(None);
    let result = client
        .download(
            bucket,
            name,
            file,
            |size| *bar.borrow_mut() = progress_bar(size),
            |got| bar.borrow().iter().for_each(|b: &ProgressBar| b.set_position(got)),
        )
        .await;
    if let Some(bar) = bar.borrow_mut().take() {
        bar.finish_and_clear();
    }
    let finish = match result {
        Ok(size) => async {
            let f = std::fs::File::open(&tmp)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &target)?;
            Ok::<u64, std::io::Error>(size)
        }
        .await
        .map_err(|e| VerbError::Local(format!("cannot write {}: {e}", target.display()))),
        Err(e) => Err(e.into()),
    };
    match finish {
        Ok(size) => {
            println!("downloaded {bucket}/{name} -> {} ({size} bytes)", target.display());
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}
