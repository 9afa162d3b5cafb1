#!/usr/bin/env python3
"""One consumer-group member in its own process, so a test can SIGKILL it (a member that dies
without LeaveGroup) and run members of different client libraries side by side.

    group_member.py --client confluent|kafka-python|aiokafka --bootstrap H:P --group G
                    --topic T [--session-timeout-ms N] [--hold] [--lifetime-s S] ...

Reports on stdout, one JSON object a line, flushed:
    {"ev": "ready"}                          consumer created and subscribed
    {"ev": "assigned", "p": [0, 1]}          whenever its assignment changes (sorted), as seen
                                             between polls
    {"ev": "revoked", "p": [0, 1]}           every revocation callback (each rebalance the
                                             member takes part in, even if too quick for
                                             "assigned" to show a change)
    {"ev": "rec", "p": 0, "o": 5}            every record received
    {"ev": "committed", "offsets": {"0": 5}} after a `commit` command: what OffsetFetch returns
    {"ev": "error", "msg": "..."}            consumer errors (the test decides what they mean)
    {"ev": "closed"}                         after a `close` command, before exiting 0
Commands on stdin, one a line:
    go                          resume partitions held by --hold (see below)
    commit {"0": 5, "1": 7}     synchronous commit of exactly these offsets (partition -> next
                                offset to read), then report committed() for every partition
                                of the topic
    close                       leave the group (LeaveGroup) and exit
--hold pauses every assigned partition as soon as it is assigned, before anything is fetched,
until `go`: a test can wait for a stable group before any record is delivered.
The process exits by itself after --lifetime-s (a bound, so no member outlives a failed test).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import sys
import threading
import time


def emit(**fields):
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def stdin_commands() -> queue.Queue:
    q: queue.Queue = queue.Queue()

    def read():
        for line in sys.stdin:
            q.put(line.strip())
        q.put("close")  # parent went away

    threading.Thread(target=read, daemon=True).start()
    return q


def run_confluent(args, commands: queue.Queue):
    import confluent_kafka
    from confluent_kafka import TopicPartition

    conf = {
        "bootstrap.servers": args.bootstrap, "group.id": args.group,
        "session.timeout.ms": args.session_timeout_ms,
        "heartbeat.interval.ms": args.heartbeat_interval_ms,
        "max.poll.interval.ms": max(args.session_timeout_ms, 10000),
        "auto.offset.reset": args.auto_offset_reset,
        "enable.auto.commit": False, "enable.partition.eof": False,
        "topic.metadata.refresh.interval.ms": 1000,
        "log_level": 3,
    }
    if args.assignor:
        conf["partition.assignment.strategy"] = args.assignor
    if args.instance_id:
        conf["group.instance.id"] = args.instance_id
    consumer = confluent_kafka.Consumer(conf)
    held = [args.hold]

    def on_assign(c, partitions):
        if args.assignor == "cooperative-sticky":
            # KIP-429: partitions are added to the current assignment.
            c.incremental_assign(partitions)
        else:
            c.assign(partitions)
        if held[0] and partitions:
            c.pause(partitions)

    def on_revoke(_c, partitions):
        # The library unassigns (eager) or incrementally unassigns (cooperative) after this.
        emit(ev="revoked", p=sorted(tp.partition for tp in partitions))

    consumer.subscribe([args.topic], on_assign=on_assign, on_revoke=on_revoke)
    emit(ev="ready")
    last = None
    deadline = time.monotonic() + args.lifetime_s
    while time.monotonic() < deadline:
        for msg in consumer.consume(num_messages=1000, timeout=0.05):
            if msg.error() is not None:
                emit(ev="error", msg=str(msg.error()))
            else:
                emit(ev="rec", p=msg.partition(), o=msg.offset())
        now = sorted(tp.partition for tp in consumer.assignment())
        if now != last:
            last = now
            emit(ev="assigned", p=now)
        try:
            cmd = commands.get_nowait()
        except queue.Empty:
            continue
        if cmd == "go":
            held[0] = False
            consumer.resume(consumer.assignment())
        elif cmd.startswith("commit "):
            offsets = json.loads(cmd[len("commit "):])
            consumer.commit(offsets=[TopicPartition(args.topic, int(p), o)
                                     for p, o in offsets.items()], asynchronous=False)
            got = consumer.committed([TopicPartition(args.topic, p)
                                      for p in range(args.partitions)], timeout=10)
            emit(ev="committed", offsets={str(tp.partition): tp.offset for tp in got})
        elif cmd == "close":
            consumer.close()
            emit(ev="closed")
            return
    emit(ev="error", msg="lifetime over")
    consumer.close()


def run_kafka_python(args, commands: queue.Queue):
    from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
    from kafka.coordinator.assignors.range import RangePartitionAssignor
    from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

    extra = {}
    if args.api_version:
        extra["api_version"] = tuple(int(x) for x in args.api_version.split("."))
    if args.assignor == "roundrobin":
        extra["partition_assignment_strategy"] = (RoundRobinPartitionAssignor,)
    elif args.assignor == "range":
        extra["partition_assignment_strategy"] = (RangePartitionAssignor,)
    if args.instance_id:
        extra["group_instance_id"] = args.instance_id
    consumer = KafkaConsumer(
        bootstrap_servers=args.bootstrap, group_id=args.group,
        session_timeout_ms=args.session_timeout_ms,
        heartbeat_interval_ms=args.heartbeat_interval_ms,
        max_poll_interval_ms=max(args.session_timeout_ms, 10000),
        auto_offset_reset=args.auto_offset_reset, enable_auto_commit=False,
        request_timeout_ms=max(args.session_timeout_ms + 5000, 30000),
        metadata_max_age_ms=1000, **extra)
    held = [args.hold]

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            emit(ev="revoked", p=sorted(tp.partition for tp in revoked))

        def on_partitions_assigned(self, assigned):
            if held[0] and assigned:
                consumer.pause(*assigned)

    consumer.subscribe([args.topic], listener=Listener())
    # kafka-python 3.0.12 can strand a member for good (no heartbeats, no assignment, never
    # rejoins) when it joins before it knows the topic's partitions: the leader assigns
    # nothing, the metadata that arrives next makes need_rejoin() true only through the
    # leader's assignment snapshot, the leader's _perform_assignment updates that snapshot
    # mid-rebalance, and if poll()'s timeout ends before the SyncGroup answer the finished
    # join is never collected (join_group_async sees need_rejoin() false and returns). The
    # same happens against Kafka with group.initial.rebalance.delay.ms=0; Kafka's default
    # delay (3 s) usually hides it. Learning the topic's partitions before the first poll
    # (what the delay gives in practice) removes the trigger. Bounded: the member's lifetime.
    known_by = time.monotonic() + args.lifetime_s
    while not consumer.partitions_for_topic(args.topic):
        if time.monotonic() > known_by:
            emit(ev="error", msg=f"no partitions known for {args.topic}")
            return
        time.sleep(0.05)
    emit(ev="ready")
    last = None
    deadline = time.monotonic() + args.lifetime_s
    while time.monotonic() < deadline:
        try:
            polled = consumer.poll(timeout_ms=50, max_records=1000)
        except Exception as e:  # e.g. a group error answer: reported, then poll again
            emit(ev="error", msg=f"poll: {type(e).__name__}: {e}")
            time.sleep(0.1)
            polled = {}
        for tp, msgs in polled.items():
            for m in msgs:
                emit(ev="rec", p=tp.partition, o=m.offset)
        now = sorted(tp.partition for tp in consumer.assignment())
        if now != last:
            last = now
            emit(ev="assigned", p=now)
        try:
            cmd = commands.get_nowait()
        except queue.Empty:
            continue
        if cmd == "go":
            held[0] = False
            consumer.resume(*consumer.assignment())
        elif cmd.startswith("commit "):
            from kafka.structs import OffsetAndMetadata
            offsets = json.loads(cmd[len("commit "):])
            consumer.commit({TopicPartition(args.topic, int(p)): OffsetAndMetadata(o, "", -1)
                             for p, o in offsets.items()})
            got = {str(p): consumer.committed(TopicPartition(args.topic, p))
                   for p in range(args.partitions)}
            emit(ev="committed", offsets={p: (-1001 if o is None else o)
                                          for p, o in got.items()})
        elif cmd == "close":
            consumer.close()
            emit(ev="closed")
            return
    emit(ev="error", msg="lifetime over")
    consumer.close()


def run_aiokafka(args, commands: queue.Queue):
    import asyncio

    from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
    from aiokafka.structs import OffsetAndMetadata, TopicPartition

    async def main():
        extra = {}
        if args.api_version:
            extra["api_version"] = args.api_version
        consumer = AIOKafkaConsumer(
            bootstrap_servers=args.bootstrap, group_id=args.group,
            session_timeout_ms=args.session_timeout_ms,
            heartbeat_interval_ms=args.heartbeat_interval_ms,
            max_poll_interval_ms=max(args.session_timeout_ms, 10000),
            auto_offset_reset=args.auto_offset_reset, enable_auto_commit=False,
            metadata_max_age_ms=1000, **extra)
        held = [args.hold]

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                emit(ev="revoked", p=sorted(tp.partition for tp in revoked))

            def on_partitions_assigned(self, assigned):
                if held[0] and assigned:
                    consumer.pause(*assigned)

        consumer.subscribe([args.topic], listener=Listener())
        await consumer.start()
        emit(ev="ready")
        last = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + args.lifetime_s
        try:
            while loop.time() < deadline:
                try:
                    batch = await consumer.getmany(timeout_ms=50, max_records=1000)
                except Exception as e:  # reported, then poll again
                    emit(ev="error", msg=f"getmany: {type(e).__name__}: {e}")
                    await asyncio.sleep(0.1)
                    batch = {}
                for tp, msgs in batch.items():
                    for m in msgs:
                        emit(ev="rec", p=tp.partition, o=m.offset)
                now = sorted(tp.partition for tp in consumer.assignment())
                if now != last:
                    last = now
                    emit(ev="assigned", p=now)
                try:
                    cmd = commands.get_nowait()
                except queue.Empty:
                    continue
                if cmd == "go":
                    held[0] = False
                    consumer.resume(*consumer.assignment())
                elif cmd.startswith("commit "):
                    offsets = json.loads(cmd[len("commit "):])
                    await consumer.commit({TopicPartition(args.topic, int(p)):
                                           OffsetAndMetadata(o, "") for p, o in offsets.items()})
                    got = {}
                    for p in range(args.partitions):
                        o = await consumer.committed(TopicPartition(args.topic, p))
                        got[str(p)] = -1001 if o is None else o
                    emit(ev="committed", offsets=got)
                elif cmd == "close":
                    break
            else:
                emit(ev="error", msg="lifetime over")
        finally:
            await consumer.stop()
        emit(ev="closed")

    asyncio.run(main())


def main():
    if os.environ.get("KARST_MEMBER_DEBUG"):
        # The client's own debug log (kafka-python, aiokafka) on stderr, with wall-clock times
        # to line up with the node's RUST_LOG trace.
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                            format="%(asctime)s.%(msecs)03d %(threadName)s %(name)s %(message)s",
                            datefmt="%H:%M:%S")
    ap = argparse.ArgumentParser()
    ap.add_argument("--client", required=True, choices=["confluent", "kafka-python", "aiokafka"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--session-timeout-ms", type=int, default=3000)
    ap.add_argument("--heartbeat-interval-ms", type=int, default=300)
    ap.add_argument("--auto-offset-reset", default="earliest")
    ap.add_argument("--assignor", default="")
    ap.add_argument("--instance-id", default="")
    ap.add_argument("--api-version", default="", help="kafka-python/aiokafka only")
    ap.add_argument("--hold", action="store_true")
    ap.add_argument("--lifetime-s", type=float, default=120)
    args = ap.parse_args()
    commands = stdin_commands()
    try:
        {"confluent": run_confluent, "kafka-python": run_kafka_python,
         "aiokafka": run_aiokafka}[args.client](args, commands)
    except Exception as e:  # reported to the test, which fails with it
        emit(ev="error", msg=f"{type(e).__name__}: {e}")
        raise


if __name__ == "__main__":
    main()
