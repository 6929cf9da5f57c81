from tests.test_secret_scan import scan, leaks  # noqa

def test_probe(scan):
    print("known", {k: v[:12] for k, v in scan.known.items()})
    print("worker logs", [len(l) for l in scan.worker_logs])
    print("flower log", len(scan.flower_log), "tasks", scan.flower_task_count, len(scan.flower_tasks))
    print("test log lines", len(scan.test_process_log))
    print("redis", [len(s) for s in scan.redis_snapshots])
    print("tables", {k: len(v) for k, v in scan.tables.items()})
    print("dead letters", len(scan.dead_letters), scan.dead_letter_statuses)
    print("run errors", scan.run_errors)
    import re
    print("retries", sum(l.count("retry=") for l in scan.worker_logs))
    print(scan.flower_log[:1500])
    # planted
    t = scan.known["onboarded apex token"]
    print(leaks("x " + t[-25:] + " y", scan.known))
    print([l for l in scan.test_process_log if "tenant" in l][:10])
    print(scan.cli_output)
    import json
    tasks=json.loads(scan.flower_tasks)
    for tid, t in list(tasks.items())[:3]:
        print(t.get("name"), t.get("args"), t.get("kwargs"), t.get("state"))
    print(scan.redis_snapshots[0][:3000])
