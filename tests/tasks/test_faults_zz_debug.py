import os, signal, time
import pytest
from tests.faults_support import *
from tests.helpers import start_sync, wait_for_run, wait_until, run_state
from tests.tasks.test_faults_crash import SLOW_BATCH_POSTS, wait_for_batch_creation

@pytest.mark.processes
def test_debug(service):
    facility_id = service.register_tenants()[0]
    set_faults(service.sandbox, apex=SLOW_BATCH_POSTS)
    worker = service.start_worker(queues="inventory")
    run_id = start_sync(facility_id)
    wait_for_batch_creation(facility_id)
    for child in worker.children():
        os.kill(child, signal.SIGKILL)
    time.sleep(40)
    print(run_state(run_id))
    print(worker.log()[-8000:])
    assert 0
