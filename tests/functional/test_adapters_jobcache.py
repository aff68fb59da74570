"""The job cache read back with the master-side time each return was stored (``local_cache``)."""

import os

import pytest
import salt.config
import salt.loader

from salt_callbacks.adapters.jobcache import JobCache
from salt_callbacks.delivery.owed import ReturnSeen


@pytest.fixture
def job_cache(tmp_path):
    opts = salt.config.master_config(None)
    opts["cachedir"] = str(tmp_path)
    opts["sock_dir"] = str(tmp_path / "sock")
    opts["pki_dir"] = str(tmp_path / "pki")
    job_cache = JobCache(opts)
    # The returners alone: the MasterMinion JobCache would make warns at exit when never destroyed.
    job_cache._returners = salt.loader.returners(opts, {})  # pylint: disable=protected-access
    return job_cache


def store_return(job_cache, minion_id="m1"):
    funcs = job_cache._funcs()  # pylint: disable=protected-access
    jid = funcs["local_cache.prep_jid"]()
    funcs["local_cache.save_load"](jid, {"fun": "test.ping", "arg": [], "tgt": minion_id})
    funcs["local_cache.returner"]({"jid": jid, "id": minion_id, "return": True, "retcode": 0, "success": True})
    return jid


def test_a_local_cache_return_comes_with_its_file_time_on_the_master(job_cache):
    jid = store_return(job_cache)
    jobs = os.path.join(job_cache.opts["cachedir"], "jobs")
    (return_file,) = [os.path.join(d, "return.p") for d, _, files in os.walk(jobs) if "return.p" in files]
    os.utime(return_file, (1_700_000_123.5, 1_700_000_123.5))  # as if stored then

    found = job_cache.stored_returns(jid)

    assert list(found) == ["m1"]
    assert isinstance(found["m1"], ReturnSeen)
    assert found["m1"].at == 1_700_000_123.5
    assert found["m1"].data["return"] is True and found["m1"].data["fun"] == "test.ping"


def test_another_job_cache_gives_no_time(job_cache):
    jid = store_return(job_cache)
    job_cache.opts["master_job_cache"] = "other_cache"

    assert job_cache._stored_at(jid, "m1") is None  # pylint: disable=protected-access
