"""The recipes' command-line layer: configs found next to the recipe, --help, run(), check_out_dir()."""
import shutil
import textwrap
from pathlib import Path

import pytest

from warpadapt.uda.cli import RUN_FILES, check_out_dir, run
from warpadapt.uda.config import _yaml_comments, load_config

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"


# ---------------------------------------------------------------- configs next to the recipe
def _fake_checkout(root: Path, iters: int) -> Path:
    """``root/recipes/rec.py`` with ``root/recipes/configs/rec/{base,fast}.yaml``."""
    recipes = root / "recipes"
    (recipes / "configs" / "rec").mkdir(parents=True)
    (recipes / "rec.py").write_text('"""A fake recipe for the tests.\n\nMore text."""\n')
    (recipes / "configs" / "rec" / "base.yaml").write_text(textwrap.dedent(f"""\
        # The base config.
        out_dir: runs/rec
        train:
          iters: {iters}          # how many steps
          lr: 0.1
        """))
    (recipes / "configs" / "rec" / "fast.yaml").write_text("_base_: base.yaml\ntrain: {lr: 0.5}\n")
    return recipes / "rec.py"


def test_load_config_resolves_next_to_the_recipe(tmp_path, monkeypatch):
    one = _fake_checkout(tmp_path / "one", iters=10)
    two = _fake_checkout(tmp_path / "two", iters=77)  # a second checkout with an edited yaml
    monkeypatch.chdir(tmp_path / "one")  # the working directory does not matter
    assert load_config(one, [], default="base").train.iters == 10
    cfg = load_config(str(two), ["--config", "fast", "train.iters=5"], default="base")
    assert cfg.train.iters == 5 and cfg.train.lr == 0.5
    assert load_config(two, [], default="base").train.iters == 77
    # --config also takes a yaml path
    assert load_config(one, ["--config", str(two.parent / "configs" / "rec" / "base.yaml")],
                       default="base").train.iters == 77
    # config_dir overrides the folder that holds <stem>/
    other = tmp_path / "elsewhere"
    shutil.copytree(two.parent / "configs", other)
    assert load_config(tmp_path / "nowhere" / "rec.py", [], default="base", config_dir=other).train.iters == 77


def test_load_config_refuses_a_bare_recipe_name_and_unknown_configs(tmp_path):
    recipe = _fake_checkout(tmp_path, iters=10)
    with pytest.raises(TypeError, match="__file__"):
        load_config("mic", [], default="synthetic_clear2fog")
    with pytest.raises(ValueError, match=r"--config: no config 'nosuch'.*base.*fast"):
        load_config(recipe, ["--config", "nosuch"], default="base")


def test_load_config_ignores_debug(tmp_path):
    recipe = _fake_checkout(tmp_path, iters=10)
    assert load_config(recipe, ["--debug", "train.iters=3"], default="base").train.iters == 3


def test_help_of_a_fake_recipe(tmp_path, capsys):
    recipe = _fake_checkout(tmp_path, iters=10)
    with pytest.raises(SystemExit) as exit_info:
        load_config(recipe, ["train.iters=3", "-h", "--config", "fast"], default="base")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("A fake recipe for the tests.\n") and "More text" not in out
    assert "[--config NAME|PATH] [key=value ...] [--debug]" in out
    assert "base" in out and "The base config." in out and "fast" in out
    assert "keys of fast" in out
    lines = [line.strip() for line in out.splitlines()]
    keys = [line.split(" = ")[0] for line in lines if " = " in line]
    assert keys == ["out_dir", "train.iters", "train.lr"]  # every key, in file order
    assert any(line.startswith("train.iters = 10") and line.endswith("# how many steps") for line in lines)
    assert any(line.startswith("train.lr = 0.5") for line in lines)


@pytest.mark.parametrize("recipe, default, texts", [
    ("mic.py", "synthetic_clear2fog",
     ["warp.fwhm", "model.backbone", "any timm model", "synthetic_clear2fog", "cityscapes2acdc_fog",
      "data.source.dir", "DACS + MIC"]),
    ("twopcnet.py", "synthetic_day2night",
     ["uda.consistency_weight", "model.backbone", "any timm name", "synthetic_day2night", "bdd100k_day2night",
      "warp.fwhm", "2PCNet"]),
])
def test_help_of_the_recipes(recipe, default, texts, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as exit_info:
        load_config(Path("recipes") / recipe, ["--help"], default=default)
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for text in texts:
        assert text in out, text
    assert f"python recipes/{recipe} [--config NAME|PATH]" in out
    # every key of the loaded config appears once, as dotted.key = value
    from omegaconf import OmegaConf
    cfg = OmegaConf.to_container(load_config(Path("recipes") / recipe, [], default=default))

    def leaves(node, prefix=""):
        for k, v in node.items():
            if isinstance(v, dict) and v:
                yield from leaves(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}"

    shown = [line.strip().split(" = ")[0] for line in out.splitlines() if " = " in line]
    assert shown == list(leaves(cfg))


def test_help_selects_config_and_takes_base_comments(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit):
        load_config(RECIPES / "twopcnet.py", ["--config", "bdd100k_day2night", "--help"],
                    default="synthetic_day2night")
    out = capsys.readouterr().out
    assert "keys of bdd100k_day2night" in out
    backbone = next(line for line in out.splitlines() if line.strip().startswith("model.backbone = "))
    assert "resnet50" in backbone and "# any timm name" in backbone  # value from the file, comment from its base
    assert "BDD100KDetection filters" in out  # the comment of an inline mapping names its parent key


def test_yaml_comment_reader():
    text = textwrap.dedent("""\
        # header
        a: 1            # one
        b:
          c: {d: 2, e: [1, 2]}   # the c
          f: "x # not a comment"  # real
          g: {h: 1,
              i: 2}     # after a multi-line mapping
          j:
            - {k: 1}
            - m: 2
              n: 3
          o: 4   # o's comment
                 # continues here
        p: url#frag
        """)
    assert _yaml_comments(text) == {"a": "one", "b.c": "the c", "b.f": "real",
                                    "b.g": "after a multi-line mapping", "b.o": "o's comment continues here"}


# ---------------------------------------------------------------- run
def _failing(exc):
    def main(argv):
        raise exc
    return main


def test_run_prints_one_line_and_exits_2(capsys, monkeypatch):
    monkeypatch.delenv("WARPADAPT_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        run(_failing(ValueError("config: train.iters: expected an int >= 1, got 0")), ["train.iters=0"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert err.startswith("error: config: train.iters")
    assert "--debug" in err and "WARPADAPT_DEBUG=1" in err


@pytest.mark.parametrize("exc", [TypeError("bad type"), FileNotFoundError("data.root: no folder /x"),
                                 FileExistsError("out_dir: x already holds a run"), KeyError("backbone")])
def test_run_reports_setup_errors(exc, capsys, monkeypatch):
    monkeypatch.delenv("WARPADAPT_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        run(_failing(exc), [])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.splitlines()) == 1


def test_run_debug_flag_and_env_propagate(monkeypatch):
    monkeypatch.delenv("WARPADAPT_DEBUG", raising=False)
    seen = []

    def main(argv):
        seen.append(list(argv))
        raise ValueError("config: train.iters: expected an int >= 1, got 0")

    with pytest.raises(ValueError, match="train.iters"):
        run(main, ["train.iters=0", "--debug"])
    assert seen[-1] == ["train.iters=0"]  # --debug stripped before main
    monkeypatch.setenv("WARPADAPT_DEBUG", "1")
    with pytest.raises(ValueError, match="train.iters"):
        run(main, ["train.iters=0"])
    monkeypatch.setenv("WARPADAPT_DEBUG", "0")  # "0" means off
    with pytest.raises(SystemExit):
        run(main, ["train.iters=0"])


def test_run_other_errors_propagate_and_returns_value(monkeypatch):
    monkeypatch.delenv("WARPADAPT_DEBUG", raising=False)
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        run(_failing(RuntimeError("CUDA out of memory")), [])
    with pytest.raises(FloatingPointError):
        run(_failing(FloatingPointError("loss is nan")), [])
    with pytest.raises(SystemExit) as exit_info:  # --help's SystemExit(0) passes through
        run(_failing(SystemExit(0)), ["--help"])
    assert exit_info.value.code == 0
    assert run(lambda argv: {"argv": argv}, ["a=1"]) == {"argv": ["a=1"]}
    monkeypatch.setattr("sys.argv", ["recipe.py", "b=2", "--debug"])
    assert run(lambda argv: argv) == ["b=2"]


def test_run_with_a_real_config_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WARPADAPT_DEBUG", raising=False)
    recipe = _fake_checkout(tmp_path, iters=10)
    with pytest.raises(SystemExit) as exit_info:
        run(lambda argv: load_config(recipe, argv, default="base"), ["train.iterz=3"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: config: unknown key 'train.iterz'")


# ---------------------------------------------------------------- check_out_dir
def test_check_out_dir_new_and_missing(tmp_path):
    assert check_out_dir(tmp_path, resume=False, overwrite=False) is False
    assert check_out_dir(tmp_path / "not" / "yet", resume=False, overwrite=False) is False
    (tmp_path / "notes.txt").write_text("not a run")
    assert check_out_dir(tmp_path, resume=False, overwrite=False) is False


@pytest.mark.parametrize("marker", ["last.pt", "final.json", "metrics.jsonl"])
def test_check_out_dir_refuses_a_run(tmp_path, marker):
    (tmp_path / marker).write_text("")
    with pytest.raises(FileExistsError) as info:
        check_out_dir(tmp_path, resume=False, overwrite=False)
    message = str(info.value)
    assert str(tmp_path) in message and "out_dir" in message
    assert "resume=true" in message and "overwrite=true" in message


def test_check_out_dir_overwrite_deletes_run_files_only(tmp_path):
    for name in RUN_FILES:
        (tmp_path / name).write_text("old")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "sub").mkdir()
    assert check_out_dir(tmp_path, resume=False, overwrite=True) is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "sub"]


def test_check_out_dir_resume(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text("a: 1\n")
    assert check_out_dir(tmp_path, resume=True, overwrite=False) is False
    out = capsys.readouterr().out
    assert "resume=true but no checkpoint at" in out and "starting from step 0" in out
    (tmp_path / "last.pt").write_bytes(b"")
    assert check_out_dir(tmp_path, resume=True, overwrite=False) is True
    assert (tmp_path / "last.pt").exists() and (tmp_path / "config.yaml").exists()


def test_check_out_dir_resume_and_overwrite(tmp_path):
    with pytest.raises(ValueError, match=r"resume.*overwrite"):
        check_out_dir(tmp_path, resume=True, overwrite=True)


def test_check_out_dir_config_alone_is_no_run_and_a_file_is_refused(tmp_path):
    (tmp_path / "config.yaml").write_text("a: 1\n")  # a start that failed before training
    assert check_out_dir(tmp_path, resume=False, overwrite=False) is False
    (tmp_path / "afile").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        check_out_dir(tmp_path / "afile", resume=False, overwrite=False)
