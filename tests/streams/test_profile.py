"""The bench's stage split of the worker's main thread (streams.orchestration.profile) on py-spy raw lines."""
from streams.orchestration.profile import main_thread_stages

LOOP = "thread (0x1): \"MainThread\";_run_once (asyncio/base_events.py:1922);_run (asyncio/events.py:80)"


def test_samples_go_to_the_stage_nearest_the_leaf_and_idle_waits_are_dropped():
    raw = "\n".join([
        f"{LOOP};load (streams/worker/loader.py:61);_send (streams/worker/s3http.py:285);write (asyncio/selector_events.py:1057) 5",
        f"{LOOP};load (streams/worker/loader.py:61);run_in_executor (asyncio/base_events.py:829) 2",
        f"{LOOP};_drain_messages (faust/transport/consumer.py:1219);Consumer.commit (faust/transport/consumer.py:953);"
        "MethodQueue.call (mode/threads.py:382) 3",
        f"{LOOP};process (streams/worker/router.py:140);decide (streams/worker/decisions.py:90) 4",
        f"{LOOP};_invoke (grpc/aio/_call.py:595) 6",
        f"{LOOP};select (selectors.py:468) 50",  # waiting for the next event: not CPU
        f"{LOOP} 1",
        "thread (0x2): \"decode_0\";_worker (concurrent/futures/thread.py:83);decode_image (streams/contract/imaging.py:1) 9",
    ])
    assert main_thread_stages(raw) == {"fetch": 5, "decode": 2, "commit": 3, "publish": 4, "batch": 6, "loop": 1}
