from negkit.evidence import update_section


def test_sections_are_replaced_in_place_and_new_ones_appended(tmp_path):
    document = tmp_path / "results.md"
    update_section(document, "negatives", "first body")
    update_section(document, "scale", "scale body")
    update_section(document, "negatives", "second body")
    text = document.read_text()
    assert text.startswith("# negkit results")
    assert "first body" not in text and text.index("second body") < text.index("scale body")
    assert text.count("<!-- negkit:negatives:start -->") == 1
