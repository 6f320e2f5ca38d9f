"""`cache list` prints keys that `cache clear --key` matches (a listed key is the start of a long one)."""

from idspam.tools.cache import main


def test_listed_key_clears_that_cache(tmp_path, capsys):
    long_a, long_b = "a" * 30 + "1", "a" * 30 + "2"
    for key in (long_a, long_b, "bbbb"):
        (tmp_path / "tokenized" / key).mkdir(parents=True)
        (tmp_path / "tokenized" / key / "data.arrow").write_bytes(b"x" * 10)
    main(["list", "--cache-dir", str(tmp_path)])
    listed = [line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith("tokenized")]
    assert "bbbb" in listed and all(long_a.startswith(k) or long_b.startswith(k) for k in listed if k != "bbbb")
    assert main(["clear", "--cache-dir", str(tmp_path), "--key", listed[0]]) == 2  # both long keys start so
    assert "give more of it" in capsys.readouterr().err and (tmp_path / "tokenized" / long_a).is_dir()
    assert main(["clear", "--cache-dir", str(tmp_path), "--key", long_a[:31]]) == 0
    assert not (tmp_path / "tokenized" / long_a).exists() and (tmp_path / "tokenized" / long_b).is_dir()
    assert main(["clear", "--cache-dir", str(tmp_path), "--key", "bbbb"]) == 0
    assert not (tmp_path / "tokenized" / "bbbb").exists()
