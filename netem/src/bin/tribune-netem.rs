//! `tribune-netem`: emulated WAN conditions between processes on one machine.
//!
//! `tribune-netem proxy --listen 127.0.1.2:8302 --to 127.0.0.2:8302 --delay 25ms [--loss 0.1]`
//! runs until it is killed (Ctrl-C).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tribune_netem::proxy::{Proxy, ProxyConditions, ProxyConfig};

#[derive(Debug, Parser)]
#[command(
    name = "tribune-netem",
    version,
    about = "Emulated network conditions (delay, loss) between processes, without tc netem"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Forward UDP and TCP from each --listen address to its --to address with a one-way delay
    /// each way and datagram loss.
    ///
    /// Each --listen pairs with the --to at the same position: `--listen A --to B --listen C
    /// --to D` runs two proxies, A→B and C→D, under the same conditions. UDP and TCP share the
    /// listening port. UDP clients get a session socket each, so replies reach the right sender;
    /// outgoing sockets bind to the listening IP, so the target sees that address. Loss applies
    /// to datagrams only (TCP bytes are delayed, never dropped). To put the proxy in the path of
    /// a Tribune server of another datacenter, give that server `-advertise-wan=<listen IP>` and
    /// proxy both its serf_wan port (8302) and its server RPC port (8300) from that IP.
    ///
    /// Example (dc2's server at 127.0.0.5 seen by others at 127.0.1.2, 25 ms each way):
    ///
    ///   tribune-netem proxy --listen 127.0.1.2:8302 --to 127.0.0.5:8302 --listen 127.0.1.2:8300 --to 127.0.0.5:8300 --delay 25ms
    Proxy(ProxyArgs),
}

#[derive(Debug, clap::Args)]
struct ProxyArgs {
    /// Where to listen (UDP and TCP); repeatable, one per --to.
    #[arg(long, value_name = "IP:PORT", required = true)]
    listen: Vec<SocketAddr>,
    /// Where to forward; repeatable, one per --listen.
    #[arg(long, value_name = "IP:PORT", required = true)]
    to: Vec<SocketAddr>,
    /// One-way delay toward the target (and back, unless --delay-back is given): 25ms, 1.5s, 0.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "0")]
    delay: Duration,
    /// One-way delay of replies back to clients, when it differs from --delay.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    delay_back: Option<Duration>,
    /// Probability in [0, 1] that a datagram is dropped (each direction).
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    loss: f64,
    /// Seed of the loss draws (each proxy adds its position).
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,
    /// Proxy UDP only.
    #[arg(long, conflicts_with = "tcp_only")]
    udp_only: bool,
    /// Proxy TCP only.
    #[arg(long)]
    tcp_only: bool,
    /// Print the counters this often (0: never).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "0")]
    stats_every: Duration,
}

/// A duration as `25ms`, `1.5s`, `2m`, `500us` or `0`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{text:?} has no unit (ms, s, m, us)"))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{number:?} is not a number"))?;
    let seconds = match unit {
        "us" | "µs" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit {unit:?} (ms, s, m, us)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Command::Proxy(args) = cli.command;
    if args.listen.len() != args.to.len() {
        eprintln!(
            "error: {} --listen but {} --to: give one --to per --listen",
            args.listen.len(),
            args.to.len()
        );
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start a runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: ProxyArgs) -> ExitCode {
    let conditions = ProxyConditions {
        delay_to_target: args.delay,
        delay_to_client: args.delay_back.unwrap_or(args.delay),
        loss: args.loss,
        cut: false,
    };
    let mut proxies = Vec::new();
    for (n, (listen, to)) in args.listen.iter().zip(&args.to).enumerate() {
        let mut config = ProxyConfig::new(*listen, *to);
        config.conditions = conditions;
        config.seed = args.seed.wrapping_add(n as u64);
        config.udp = !args.tcp_only;
        config.tcp = !args.udp_only;
        match Proxy::start(config).await {
            Ok(proxy) => {
                println!(
                    "proxy {} -> {} (delay {:?} / back {:?}, loss {})",
                    proxy.local_addr(),
                    to,
                    conditions.delay_to_target,
                    conditions.delay_to_client,
                    conditions.loss
                );
                proxies.push(proxy);
            }
            Err(error) => {
                eprintln!("error: proxy {listen} -> {to}: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    if args.stats_every.is_zero() {
        std::future::pending::<()>().await;
    }
    loop {
        tokio::time::sleep(args.stats_every).await;
        for proxy in &proxies {
            println!("{} {:?}", proxy.local_addr(), proxy.control().stats());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_unit_and_bad_ones_are_refused() {
        assert_eq!(parse_duration("25ms"), Ok(Duration::from_millis(25)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500us"), Ok(Duration::from_micros(500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["25", "ms", "25h", "-1s", "1..2s", ""] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_command_line_pairs_listen_and_to() {
        let cli = Cli::try_parse_from([
            "tribune-netem",
            "proxy",
            "--listen",
            "127.0.1.2:8302",
            "--to",
            "127.0.0.2:8302",
            "--delay",
            "25ms",
            "--loss",
            "0.1",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let Command::Proxy(args) = cli.command;
        assert_eq!(
            args.listen,
            vec![
                "127.0.1.2:8302"
                    .parse::<SocketAddr>()
                    .unwrap_or_else(|e| panic!("{e}"))
            ]
        );
        assert_eq!(args.delay, Duration::from_millis(25));
        assert_eq!(args.loss, 0.1);
        assert!(Cli::try_parse_from(["tribune-netem", "proxy", "--listen", "127.0.0.1:1"]).is_err());
    }
}
