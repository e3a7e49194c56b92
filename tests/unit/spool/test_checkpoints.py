"""Where a replayable source resumes after a crash (spool/checkpoints.py)."""

from hostlog.spool.checkpoints import CheckpointFiles


def test_resumes_at_the_newest_position_the_spool_holds(tmp_path):
    cp = CheckpointFiles(tmp_path, recovered_seq=0)
    cp.save("files", {"offset": 10})  # durable, lags behind
    cp.note_written("files", 100, {"offset": 50})
    cp.note_written("files", 200, {"offset": 90})
    # the spool came back with seq 200: the frame of the newest pair is in it
    assert CheckpointFiles(tmp_path, recovered_seq=200).load("files") == {"offset": 90}


def test_a_pair_whose_frame_never_reached_the_spool_is_not_used(tmp_path):
    cp = CheckpointFiles(tmp_path)
    cp.save("files", {"offset": 10})
    cp.note_written("files", 100, {"offset": 50})
    cp.note_written("files", 200, {"offset": 90})  # killed before frame 200 was written
    assert CheckpointFiles(tmp_path, recovered_seq=150).load("files") == {"offset": 50}


def test_after_a_lost_machine_the_durable_checkpoint_is_used(tmp_path):
    cp = CheckpointFiles(tmp_path)
    cp.save("files", {"offset": 10})
    cp.note_written("files", 100, {"offset": 50})
    cp.note_written("files", 200, {"offset": 90})
    assert CheckpointFiles(tmp_path, recovered_seq=40).load("files") == {"offset": 10}


def test_unwritten_pairs_are_forgotten_at_start_so_later_seqs_cannot_revive_them(tmp_path):
    cp = CheckpointFiles(tmp_path)
    cp.save("files", {"offset": 10})
    cp.note_written("files", 200, {"offset": 90})  # frame never written; spool ends at 150
    live = {"seq": 150}
    restarted = CheckpointFiles(tmp_path, recovered_seq=150, last_seq=lambda: live["seq"])
    live["seq"] = 500  # the new run writes other records past 200
    assert restarted.load("files") == {"offset": 10}


def test_only_the_two_newest_pairs_are_kept(tmp_path):
    cp = CheckpointFiles(tmp_path)
    for seq in (1, 2, 3, 4):
        cp.note_written("j", seq, {"cursor": f"c{seq}"})
    assert CheckpointFiles(tmp_path, recovered_seq=4).load("j") == {"cursor": "c4"}
    # pairs 1 and 2 are gone: a spool that ends at 2 falls back to the durable checkpoint
    assert CheckpointFiles(tmp_path, recovered_seq=2).load("j") is None


def test_a_torn_written_file_falls_back_to_the_durable_checkpoint(tmp_path):
    cp = CheckpointFiles(tmp_path)
    cp.save("files", {"offset": 10})
    (tmp_path / "files.written.json").write_text('[{"seq": 1')  # cut by a power loss
    assert CheckpointFiles(tmp_path, recovered_seq=100).load("files") == {"offset": 10}
