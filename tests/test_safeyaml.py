"""safeyaml: YAML from files others write, without alias bombs or recursion errors."""

from __future__ import annotations

import pytest
import yaml

from ssl_exporter import safeyaml


def _bomb(levels: int) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_ordinary_documents_load_as_with_safe_load() -> None:
    text = "a: 1\nb: [x, {c: 2.5, d: null}]\ndefaults: &d {timeout: 5s}\nm: {<<: *d, prober: tcp}\n"
    assert safeyaml.load(text) == yaml.safe_load(text)


def test_an_alias_bomb_is_refused_while_composing() -> None:
    # 9^9 = 387 million strings once expanded; refused at a5 (line 6), the first over the bound.
    with pytest.raises(safeyaml.UnsafeYAML) as caught:
        safeyaml.load(_bomb(9))
    assert str(caught.value) == f"more than {safeyaml.MAX_EXPANDED_NODES} values once aliases are expanded, line 6"
    assert safeyaml.load(_bomb(3))["a2"][8][8] == ["lol"] * 9  # 729 strings: fine


def test_aliases_can_be_refused_outright() -> None:
    with pytest.raises(safeyaml.UnsafeYAML, match=r"^YAML aliases \(\*d\) are not accepted, line 2$"):
        safeyaml.load("x: &d 1\ny: *d\n", aliases=False)
    assert safeyaml.load("x: &d 1\n", aliases=False) == {"x": 1}  # an anchor alone is harmless


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, "{a: " * 65 + "1" + "}" * 65,
                                  "x:\n" + "".join(" " * i + "- \n" for i in range(1, 200))])
def test_deep_nesting_is_a_one_line_error(text: str) -> None:
    with pytest.raises(safeyaml.UnsafeYAML, match=rf"^nested deeper than {safeyaml.MAX_DEPTH} levels, line \d+$"):
        safeyaml.load(text)
    assert safeyaml.load("{a: " * 63 + "1" + "}" * 63) is not None


@pytest.mark.parametrize("text", ["a: [1\n", "x: !!python/object:os.system ls\n", "\t- x: " + "y" * 10_000 + "\n"])
def test_invalid_yaml_is_one_clipped_line(text: str) -> None:
    with pytest.raises(safeyaml.UnsafeYAML) as caught:
        safeyaml.load(text)
    message = str(caught.value)
    assert message.startswith("not valid YAML: ") and "\n" not in message and len(message) < 200


def test_clip() -> None:
    assert safeyaml.clip("a\nb\x00") == "a b\x00"
    assert safeyaml.clip("x" * 1000, 10) == "x" * 10 + "…"
    assert safeyaml.clip(["y"] * 3) == "['y', 'y', 'y']"
