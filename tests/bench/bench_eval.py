"""`make bench` (part): an eval of 1,000 cases with a model answering in 2 s, on the workers.

    python -m tests.bench.bench_eval [--cases 1000] [--model-delay 2]

Issue 6: run_eval over 1,000 cases with a 2 s model finishes in well under the serial time,
with the same concurrency as drafting. The setup is run_bench.py's (its own database, Redis db
11 with its own queue names, the fake model server process, two workers `-P threads -c 200` as
docker-compose.yml starts them); the cases are customer replies that pass when the reply keeps
its apologetic tone. Prints the elapsed time against the serial time (cases x model delay).
Not a test: it measures and exits 0 once the services are there.
"""
from __future__ import annotations

import json
import sys
import time

from tests.bench.run_bench import CUSTOMER_REPLY, Bench, model_control, parse_args, say


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cases = 1000
    if "--cases" in argv:
        i = argv.index("--cases")
        cases = int(argv[i + 1])
        del argv[i:i + 2]
    args = parse_args(argv)
    bench = Bench(args)
    try:
        bench.setup()
        model_control(bench.model_url, f"/bench/delay?seconds={args.model_delay:g}")
        bench.start_workers()
        from evals import services
        from evals.models import EvalRun, RunState

        dataset = services.dataset_for(bench.version.workflow, "bench")
        services.cases_import(dataset=dataset, text="\n".join(json.dumps({
            "id": f"case-{i:05d}", "input": {**CUSTOMER_REPLY, "complaint": f"Parcel {i} arrived broken."},
            "expect": {"fields": {"tone": {"equals": "apologetic"}}}}) for i in range(cases)))
        started = time.monotonic()
        run = services.eval_run_start(version=bench.version, dataset=dataset)
        while True:
            run = EvalRun.objects.get(pk=run.pk)
            # A failed run ends too (its reason is printed): waiting for "done" would wait out the timeout.
            if run.state != RunState.RUNNING or time.monotonic() - started > max(600.0, cases * 2.0):
                break
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        serial = cases * args.model_delay
        say("")
        say(f"eval of {cases} cases, model answering in {args.model_delay:g} s, workers "
            f"{args.workers} x -P {args.pool} -c {args.concurrency}")
        say(f"  finished: {run.completed}/{run.total} cases, {run.passed} passed, in {elapsed:.1f} s "
            f"({run.completed / elapsed:.1f} cases/s)")
        say(f"  serial time {serial:.0f} s: {elapsed / serial:.3f} of it ({serial / elapsed:.0f}x faster)"
            f"{'' if run.state == RunState.DONE else '  !!! NOT FINISHED'}")
        if run.state == RunState.FAILED:
            say(f"  !!! the run FAILED: {run.failure_reason}")
        return 0
    finally:
        bench.cleanup()


if __name__ == "__main__":
    sys.exit(main())
