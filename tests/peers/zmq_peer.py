#!/usr/bin/env python3
"""A ZeroMQ peer built on pyzmq (libzmq), for iotload's interoperability tests (tests/zmq.rs).

Roles:

  proxy --pub-bind tcp://127.0.0.1:P --sub-bind tcp://127.0.0.1:P1
      libzmq's own forwarder, zmq.proxy(XSUB, XPUB). Prints "ready" once bound, then
      forwards until killed.

  pub --connect tcp://127.0.0.1:P --topic 'interop/{device}/req' --devices D --count N
      Publishes N stamped messages per device as [topic, headers, payload] frames, the
      stamp both as JSON fields of the payload and as iotload-* headers. Uses an XPUB
      socket (a PUB that shows the subscriptions it gets) and starts only once the proxy's
      subscription has arrived, so nothing is dropped by the slow-joiner problem.

  sub --connect tcp://127.0.0.1:P1 --probe tcp://127.0.0.1:P --prefix 'interop/' --expect N
      Subscribes to the prefix, proves the subscription is in force by sending probes
      through the proxy until one comes back, prints "ready", then receives N messages
      (or gives up after --timeout seconds) and prints one JSON report.

Needs pyzmq (Debian: python3-zmq). Exit code 0 on success, 1 on a timeout or bad input.
"""

import argparse
import json
import os
import sys
import time

import zmq


def now_us():
    return time.time_ns() // 1000


def proxy(args):
    ctx = zmq.Context.instance()
    xsub = ctx.socket(zmq.XSUB)
    xsub.bind(args.pub_bind)
    xpub = ctx.socket(zmq.XPUB)
    xpub.bind(args.sub_bind)
    print("ready", flush=True)
    zmq.proxy(xsub, xpub)


def publish(args):
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.XPUB)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.connect(args.connect)
    if not sock.poll(args.timeout * 1000, zmq.POLLIN):
        print("no subscription arrived from the proxy", file=sys.stderr)
        return 1
    sock.recv()
    for seq in range(args.count):
        for device in range(args.devices):
            topic = args.topic.replace("{device}", str(device))
            sent = now_us()
            payload = json.dumps(
                {"device": device, "seq": seq, "intended_us": sent, "sent_us": sent}
            )
            headers = "\n".join(
                f"{name}: {value}"
                for name, value in [
                    ("iotload-device", device),
                    ("iotload-seq", seq),
                    ("iotload-intended-us", sent),
                    ("iotload-sent-us", sent),
                ]
            )
            sock.send_multipart([topic.encode(), headers.encode(), payload.encode()])
    sock.close(linger=5000)
    ctx.term()
    print(f"sent {args.count * args.devices}", flush=True)
    return 0


def parse_headers(frame):
    headers = {}
    for line in frame.decode().split("\n"):
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name] = value[1:] if value.startswith(" ") else value
    return headers


def subscribe(args):
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.connect(args.connect)
    sub.setsockopt(zmq.SUBSCRIBE, args.prefix.encode())
    probe_topic = f"$pyzmq/probe/{os.getpid()}".encode()
    sub.setsockopt(zmq.SUBSCRIBE, probe_topic)
    prober = ctx.socket(zmq.PUB)
    prober.connect(args.probe)
    deadline = time.monotonic() + args.timeout
    kept = []
    ready = False
    while not ready and time.monotonic() < deadline:
        prober.send_multipart([probe_topic, b"", b""])
        while sub.poll(20, zmq.POLLIN):
            frames = sub.recv_multipart()
            if frames[0] == probe_topic:
                ready = True
            else:
                kept.append(frames)
    prober.close(linger=0)
    if not ready:
        print("the probe never came back through the proxy", file=sys.stderr)
        return 1
    sub.setsockopt(zmq.UNSUBSCRIBE, probe_topic)
    print("ready", flush=True)

    report = {"received": 0, "frame_counts": [], "header_names": [], "payloads": [],
              "topics": [], "stamps": []}
    frame_counts, header_names, payloads, topics, stamps = set(), set(), set(), set(), set()
    deadline = time.monotonic() + args.timeout
    while report["received"] < args.expect and time.monotonic() < deadline:
        if kept:
            frames = kept.pop(0)
        elif sub.poll(100, zmq.POLLIN):
            frames = sub.recv_multipart()
        else:
            continue
        if frames[0] == probe_topic:
            continue
        report["received"] += 1
        frame_counts.add(len(frames))
        topics.add(frames[0].decode())
        headers = parse_headers(frames[1]) if len(frames) >= 3 else {}
        header_names.update(headers)
        payload = frames[-1]
        payloads.add(payload.decode(errors="replace")[:40])
        if "iotload-seq" in headers:
            stamps.add((int(headers["iotload-device"]), int(headers["iotload-seq"])))
        else:
            body = json.loads(payload)
            stamps.add((body["device"], body["seq"]))
    report["frame_counts"] = sorted(frame_counts)
    report["header_names"] = sorted(header_names)
    report["payloads"] = sorted(payloads)[:5]
    report["topics"] = sorted(topics)
    report["stamps"] = len(stamps)
    print(json.dumps(report), flush=True)
    sub.close(linger=0)
    ctx.term()
    return 0 if report["received"] >= args.expect else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    roles = parser.add_subparsers(dest="role", required=True)
    p = roles.add_parser("proxy")
    p.add_argument("--pub-bind", required=True)
    p.add_argument("--sub-bind", required=True)
    p = roles.add_parser("pub")
    p.add_argument("--connect", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--timeout", type=float, default=30)
    p = roles.add_parser("sub")
    p.add_argument("--connect", required=True)
    p.add_argument("--probe", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--expect", type=int, required=True)
    p.add_argument("--timeout", type=float, default=30)
    args = parser.parse_args()
    if args.role == "proxy":
        proxy(args)
        return 0
    if args.role == "pub":
        return publish(args)
    return subscribe(args)


if __name__ == "__main__":
    sys.exit(main())
