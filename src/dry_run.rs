//! `--dry-run`: the resolved plan and where each value came from, without connecting.

use iotload_core::plan::BrokerUrl;

use crate::cli::{Cli, Command};
use crate::pipeline::required_url;

/// `--dry-run`: every option of the chosen subcommand with its value and source.
pub(crate) fn print_dry_run(cli: &Cli) -> anyhow::Result<()> {
    let name = cli.command.name();
    println!("iotload {name} (dry run: nothing is connected)");
    for o in crate::cli::resolved_options(cli) {
        println!("  --{:<20} {:<32} ({})", o.long, o.value, o.source);
    }
    let plan_line = match &cli.command {
        Command::Run(a) => {
            let plan = a
                .load
                .resolve(&a.broker, &a.stamp, a.output.drain_timeout)?;
            Some(describe_load(&plan, a.broker.url()?))
        }
        Command::Loadgen(a) => {
            let plan = a
                .load
                .resolve(&a.broker, &a.stamp, a.output.drain_timeout)?;
            Some(describe_load(&plan, Some(required_url(&a.broker)?)))
        }
        Command::EchoIpaas(a) => {
            let plan = a.echo.resolve(&a.broker)?;
            required_url(&a.broker)?;
            Some(format!("echo {:?} → {}", plan.from, plan.route_text()))
        }
        Command::Results(_) => None,
        Command::Plotter(a) => {
            let mut outputs = Vec::new();
            for (what, path) in [
                ("JSON Lines", &a.jsonl),
                ("CSV", &a.csv),
                ("an HdrHistogram log", &a.hlog),
                ("an HTML report", &a.html),
            ] {
                if let Some(p) = path {
                    outputs.push(format!("write {what} to {}", p.display()));
                }
            }
            if let Some(url) = &a.es.elasticsearch {
                outputs.push(format!(
                    "index into {}",
                    iotload_core::plan::redact_url(url)
                ));
            }
            if let Some(addr) = &a.serve {
                outputs.push(format!("serve Prometheus metrics at http://{addr}/metrics"));
            }
            if let Some(addr) = &a.ui {
                outputs.push(format!("serve the live page at http://{addr}/"));
            }
            Some(format!(
                "read run(s) {} from {}; {}",
                a.runs.join(", "),
                iotload_core::plan::redact_url(&a.store),
                if outputs.is_empty() {
                    "no output asked for".to_string()
                } else {
                    outputs.join(", ")
                }
            ))
        }
        #[cfg(feature = "zmq")]
        Command::ZmqProxy(a) => Some(format!(
            "forward from publishers at {} to subscribers at {}",
            a.pub_bind, a.sub_bind
        )),
        Command::Collector(a) => {
            let plan = a.collect.resolve(&a.broker, &a.stamp)?;
            required_url(&a.broker)?;
            Some(format!("collect from {:?}", plan.filters))
        }
    };
    if let Some(line) = plan_line {
        println!("plan: {line}");
    }
    Ok(())
}

fn describe_load(plan: &loadgen::LoadPlan, url: Option<BrokerUrl>) -> String {
    let to = url.map_or_else(|| "the embedded broker".to_string(), |u| u.to_string());
    if !plan.from_fleet_file {
        let g = &plan.groups[0];
        return format!(
            "{} devices × {} msg/s, {} messages in total, topic {}, to {to}",
            plan.devices,
            g.rate.per_s(),
            plan.planned(),
            g.topic.as_str(),
        );
    }
    let mut text = format!(
        "{} devices in {} groups, {} messages in total, to {to}",
        plan.devices,
        plan.groups.len(),
        plan.planned()
    );
    for g in &plan.groups {
        text.push_str(&format!(
            "\n  group {}: devices {}..{} × {} msg/s, topic {}, actions on {}{}",
            g.name,
            plan.first_device + g.offset,
            plan.first_device + g.offset + g.devices - 1,
            g.rate.per_s(),
            g.topic.as_str(),
            g.action_topic.as_str(),
            g.qos.map_or_else(String::new, |q| format!(", QoS {q}"))
        ));
    }
    text
}
