//! `cartero webservice`: the white-space normalizer of the statement's part 2 (SPEC 7).

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// TCP port (0 picks a free one; the start line says which).
    #[arg(short, long)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
}

pub fn run(args: Args) -> ExitCode {
    let runtime = match crate::cli::common::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let addr = SocketAddr::new(args.bind, args.port);
    let served = runtime.block_on(crate::messaging::webservice::serve(
        addr,
        |at| {
            println!("webservice on http://{at}/ (WSDL: http://{at}/?wsdl; JSON: POST http://{at}/normalize)");
        },
        crate::shutdown::signal(),
    ));
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cartero: cannot serve on {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}
