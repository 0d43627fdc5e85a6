"""slarm-inspect: look at raw episodes before spending training time on them. Never writes to them."""

from __future__ import annotations

import json
from pathlib import Path

import click

from slarm.common import count
from slarm.convert.sources import MAX_GAP_S, holds_episodes, why_no_episodes
from slarm.errors import EXIT_FAILURE, Refused, SlarmError, run_command
from slarm.raw import episode_index, list_episodes
from slarm.viewer import ViewerError

from .report import Inspection, inspect

PLOT_FORMATS = (".png", ".svg", ".pdf", ".jpg")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON (for scripts) instead of a table.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Write an image (.png, .svg, .pdf or .jpg): per episode, state over time and tick timing.")
@click.option("--rerun", "rerun_episode", type=int, metavar="EPISODE",
              help="Replay this episode (its number) in the Rerun viewer.")
@click.option("--save", type=click.Path(dir_okay=False, path_type=Path),
              help="With --rerun: write the replay to this .rrd file instead of opening a viewer.")
@click.option("--decode", is_flag=True,
              help="Decode every camera frame and flag those slarm-convert would replace (broken or corrupt "
                   "JPEG data). Without it frames are checked from their markers only, which is fast.")
@click.option("--max-gap", type=click.FloatRange(min=0, min_open=True), default=MAX_GAP_S, show_default=True,
              metavar="SECONDS", help="Flag a longer pause between two recorded ticks (as slarm-convert --max-gap).")
def main(target, as_json, plot, rerun_episode, save, decode, max_gap):
    """Show what the raw episodes in TARGET (a folder written by slarm-capture, or one
    episode file) hold: one row per episode, with flags for low fps, a frozen state,
    repeated camera frames, broken frames, a long pause and no frames; unfinished and
    unreadable files (with the reason); and a totals line.

    \b
    Examples:
      slarm-inspect raw/so101_pickplace_v1
      slarm-inspect raw/so101_pickplace_v1 --json | jq '.totals'
      slarm-inspect raw/so101_pickplace_v1 --plot review.png
      slarm-inspect raw/so101_pickplace_v1 --rerun 3

    Exit status: 0 done; 1 failed: a file could not be read (it is listed, the rest is
    shown), or the replay failed; 2 refused before any work (a wrong argument); 130
    interrupted (Ctrl-C).
    """
    if not target.exists():
        raise Refused(f"{target}: no such folder or episode file (slarm-capture writes to {{raw_dir}}/{{dataset_name}})")
    if save and rerun_episode is None:
        raise Refused("--save goes with --rerun EPISODE")
    if save and not save.parent.is_dir():
        raise Refused(f"--rerun {rerun_episode}: cannot write {save} ({save.parent} is not a folder)")
    if plot and plot.suffix.lower() not in PLOT_FORMATS:
        raise Refused(f"--plot {plot}: give a file name ending in {', '.join(PLOT_FORMATS)}")
    result = inspect(target, decode, max_gap)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=1))
    else:
        click.echo(table(result))
    if target.is_dir() and not holds_episodes(target):
        _note(as_json, f"note: {why_no_episodes(target)}")
    if plot:
        from .plot import plot as draw

        files = [Path(e.file) for e in result.episodes]
        if not files:
            raise Refused("nothing to plot: no readable episodes")
        try:
            drawn = draw(files, plot)
        except OSError as e:
            raise Refused(f"--plot {plot}: cannot write it ({e})")
        _note(as_json, f"plot of {count(drawn, 'episode')} written to {plot}"
              + (f" (the first {drawn} of {len(files)})" if drawn < len(files) else ""))
    if rerun_episode is not None:
        from .replay import replay

        path = _find(target, rerun_episode)
        try:
            replay(path, save)
        except ViewerError as e:
            raise SlarmError(f"--rerun {rerun_episode}: {e}") from None
        except (OSError, RuntimeError) as e:  # rerun reports a file it cannot create as RuntimeError
            problem = f"cannot write {save} ({e})" if save else f"replay failed ({e})"
            raise SlarmError(f"--rerun {rerun_episode}: {problem}") from None
        except Exception as e:  # a damaged file (RawFormatError, or h5py failing on its data)
            raise SlarmError(f"--rerun {rerun_episode}: {path} cannot be replayed ({e})") from None
        _note(as_json, f"episode {rerun_episode} replayed " + (f"into {save}" if save else "in the Rerun viewer"))
    if result.unreadable:  # for scripts: `slarm-inspect raw/x && slarm-convert ...` stops at a damaged file
        return EXIT_FAILURE


def table(result: Inspection) -> str:
    head = ["#", "uuid", "task", "duration", "frames", "fps", "p99 dev", "missed", "cameras", "size", "flags"]
    rows = []
    for e in result.episodes:
        cams = ", ".join(f"{c.name} {c.width}x{c.height} {c.encoding}" for c in e.cameras)
        rows.append([
            "-" if e.index is None else str(e.index), e.uuid[:8], _short(e.task, 28), f"{e.duration_s:.1f}s",
            str(e.frames), f"{e.achieved_fps:.1f}/{e.fps}", f"{e.period_deviation_p99_ms:.1f}ms", str(e.missed_ticks),
            cams, _size(e.size_bytes), "; ".join(e.flags) or "ok",
        ])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(head, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    for f in result.unfinished:
        lines.append(f"unfinished: {f} (capture still running, or it was killed; convert skips it)")
    for u in result.unreadable:
        lines.append(f"unreadable: {u['file']}: {u['reason']}")
    t = result.totals()
    lines.append(
        f"total: {count(t['episodes'], 'episode')}, {t['frames']} frames, {t['duration_s']:.1f}s, "
        f"{t['missed_ticks']} missed ticks, {_size(t['size_bytes'])}; {t['flagged']} flagged, "
        f"{t['unfinished']} unfinished, {t['unreadable']} unreadable")
    return "\n".join(lines)


def _find(target: Path, index: int) -> Path:
    if target.is_file():
        if episode_index(target) not in (None, index):
            raise Refused(f"--rerun {index}: {target} is episode {episode_index(target)}")
        return target
    complete, _ = list_episodes(target)
    for p in complete:
        if episode_index(p) == index:
            return p
    have = ", ".join(str(episode_index(p)) for p in complete) or "none"
    raise Refused(f"--rerun {index}: no complete episode {index} in {target} (episodes: {have})")


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}GB"


def _note(as_json: bool, message: str) -> None:
    click.echo(message, err=as_json)  # keep stdout pure JSON with --json


def run() -> None:
    """The slarm-inspect command (exit status, and no wait on a Rerun viewer at exit: run_command)."""
    run_command(main)


if __name__ == "__main__":
    run()
