from evidence import update_section


def test_sections_are_replaced_in_place_and_new_ones_appended(tmp_path):
    document = tmp_path / "results.md"
    update_section(document, "negatives", "first body")
    update_section(document, "scale", "scale body")
    update_section(document, "negatives", "second body")
    text = document.read_text()
    assert text.startswith("# negkit results")
    assert "first body" not in text and text.index("second body") < text.index("scale body")
    assert text.count("<!-- negkit:negatives:start -->") == 1


def test_run_or_reuse_reuses_only_a_finished_run_with_the_same_config(tmp_path, monkeypatch):
    from evidence import document as module

    calls = []

    def fake_run(paths, config):
        calls.append(config.seed)
        metrics = {"config": config.model_dump(mode="json"), "strategies": {}}
        paths.metrics.write_text(__import__("json").dumps(metrics))
        return metrics

    monkeypatch.setattr(module, "run_experiment", fake_run)
    config = {"dataset": "digits", "strategies": ["simclr"], "seed": 1}
    module.run_or_reuse(tmp_path / "run", config, lambda _: None)
    module.run_or_reuse(tmp_path / "run", config, lambda _: None)  # identical: reused
    module.run_or_reuse(tmp_path / "run", {**config, "seed": 2}, lambda _: None)  # changed: rerun
    assert calls == [1, 2]
    (tmp_path / "run" / "metrics.json").unlink()  # as if interrupted: the same config resumes in place
    (tmp_path / "run" / "results").mkdir()
    (tmp_path / "run" / "results" / "kept.json").write_text("{}")
    module.run_or_reuse(tmp_path / "run", {**config, "seed": 2}, lambda _: None)
    assert calls == [1, 2, 2] and (tmp_path / "run" / "results" / "kept.json").exists()
