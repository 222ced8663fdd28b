"""Quality-gate benchmark: what judging a take costs, and whether the judge is right.

(1) Cost: CPU seconds (user + system, every thread of this process) per minute of audio
that the `quality` plugin spends on a take, without tempo and key (decoding, loudness,
silence, the end, clipping, the waveform) and with them (librosa), for full-length takes in
mp3 and flac; the first analysis in a process (librosa loading its compiled parts) apart.
(2) Accuracy: a corpus of good and defective takes written by the simulator's own audio code
(bygheartd/simulator/audio.py), each judged against its request by the plugin's
`on_complete`; precision and recall per finding, every planted defect found, no good take
failed. Prints two tables, writes bench/results/quality.json (`--quick`: shorter and fewer
takes, quality-quick.json). Usage: `.venv/bin/python bench/quality.py [--quick] [--out PATH]`.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bygheartd.simulator.audio import audio_format_for, music_for, write_take
from bygheartd_plugins import quality

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "quality.json"
RATE = 48000
GOAL_PLAIN = 1.0  # CPU s per minute of audio, without tempo and key
GOAL_ANALYSIS = 5.0  # with them
# Tempi and keys the corpus cycles through: the range songs use (the estimator's prior
# halves 180 BPM and more, a match unless strict_tempo: see docs/plugins.md).
TEMPI = (72, 84, 96, 104, 112, 120, 128, 140, 150, 165)
KEYS = (
    "C major", "A minor", "G major", "E minor", "F major", "D minor", "Bb major",
    "F# minor", "Eb major", "C# minor", "Ab major", "B minor",
)  # fmt: skip
FORMATS = ("mp3", "flac", "wav", "opus")


@dataclass(frozen=True)
class Sizes:
    """Cost: the length and number of takes per format. Accuracy: takes per case and their
    length."""

    cost_seconds: float
    cost_takes: int
    takes_per_case: int
    case_seconds: float


FULL = Sizes(cost_seconds=180.0, cost_takes=3, takes_per_case=12, case_seconds=30.0)
QUICK = Sizes(cost_seconds=30.0, cost_takes=1, takes_per_case=2, case_seconds=8.0)


@dataclass(frozen=True)
class Case:
    """One kind of take in the corpus: what the simulator plants, what the request asks,
    and the findings a right judge gives."""

    name: str
    defects: tuple[str, ...]
    expect: tuple[str, ...]
    request: str = "same"  # same | other_tempo | other_key | half_time | relative_key


CASES = (
    Case("good", (), ()),
    Case("good, half time asked", (), (), "half_time"),
    Case("good, relative key asked", (), (), "relative_key"),
    Case("cut short", ("cut_short",), ("cut_short",)),
    Case("cut off", ("cut_off",), ("cut_off",)),
    Case("silent", ("silent",), ("silent",)),
    Case("dropout", ("dropout",), ("silent",)),
    Case("clipped", ("clipped",), ("clipped",)),
    Case("undecodable", ("undecodable",), ("undecodable",)),
    Case("other tempo", (), ("off_tempo",), "other_tempo"),
    Case("other key", (), ("off_key",), "other_key"),
)


def cpu() -> float:
    """CPU seconds of this process so far, every thread (numpy and librosa may use several)."""
    return time.process_time()


def _request(case: Case, bpm: float, key: str, seconds: float) -> dict[str, Any]:
    tonic, minor = quality.parse_key(key) or (0, False)
    asked_bpm, asked_key = bpm, key
    if case.request == "other_tempo":
        asked_bpm = round(bpm * 1.3)  # 30 % off: not within 6 %, nor double or half
    elif case.request == "half_time":
        asked_bpm = bpm / 2
    elif case.request == "other_key":
        asked_key = quality.key_name(tonic + 2, minor)  # a whole tone away
    elif case.request == "relative_key":
        asked_key = quality.key_name(*quality.relative_key(tonic, minor))
    return {"duration": seconds, "bpm": asked_bpm, "key": asked_key}


def judge(path: Path, request: dict[str, Any], **table: Any) -> dict[str, Any]:
    job = SimpleNamespace(request=request, takes=lambda: ())  # a first submission
    result = quality.on_complete(job, [path], table)  # type: ignore[arg-type]
    entry: dict[str, Any] = result["sidecar"][path.name]
    return entry


def cost(folder: Path, sizes: Sizes) -> dict[str, Any]:
    """CPU seconds per minute of audio, per format, without and with tempo and key."""
    warm = write_take(folder, "warm.mp3", audio_format_for("mp3"), 10.0, RATE)
    start = cpu()
    judge(warm, {"duration": 10})  # the first analysis in this process
    first = cpu() - start
    out: dict[str, Any] = {"first_analysis_cpu_seconds": round(first, 2), "formats": {}}
    for fmt in ("mp3", "flac"):
        audio = audio_format_for(fmt)
        spent = {"plain": 0.0, "analysis": 0.0}
        minutes = 0.0
        for n in range(sizes.cost_takes):
            music = music_for(f"cost{n}", bpm=TEMPI[n], key=KEYS[n])
            path = write_take(
                folder, f"cost{n}{audio.suffix}", audio, sizes.cost_seconds, RATE, music
            )
            request = {"duration": sizes.cost_seconds, "bpm": TEMPI[n], "key": KEYS[n]}
            for label, on in (("plain", False), ("analysis", True)):
                start = cpu()
                entry = judge(path, request, analysis=on)
                spent[label] += cpu() - start
                assert entry["verdict"] == "pass", entry["findings"]
            minutes += sizes.cost_seconds / 60
            path.unlink()
        out["formats"][fmt] = {
            "takes": sizes.cost_takes,
            "minutes_of_audio": round(minutes, 2),
            "cpu_seconds_per_minute": round(spent["plain"] / minutes, 3),
            "cpu_seconds_per_minute_with_tempo_key": round(spent["analysis"] / minutes, 3),
        }
    return out


def accuracy(folder: Path, sizes: Sizes) -> dict[str, Any]:
    """Judge every take of the corpus; precision and recall per finding."""
    takes = []
    number = 0
    for case in CASES:
        for n in range(sizes.takes_per_case):
            bpm, key = TEMPI[number % len(TEMPI)], KEYS[number % len(KEYS)]
            fmt = FORMATS[number % len(FORMATS)]
            number += 1
            audio = audio_format_for(fmt)
            name = f"{case.name.replace(' ', '-').replace(',', '')}-{n}"
            music = music_for(name, bpm=bpm, key=key, defects=case.defects)
            path = write_take(folder, name + audio.suffix, audio, sizes.case_seconds, RATE, music)
            entry = judge(path, _request(case, bpm, key, sizes.case_seconds))
            found = [f["code"] for f in entry["findings"]]
            takes.append(
                {
                    "case": case.name,
                    "format": fmt,
                    "bpm": bpm,
                    "key": key,
                    "expected": list(case.expect),
                    "found": found,
                    "measured_bpm": entry.get("bpm"),
                    "measured_key": entry.get("key"),
                }
            )
            path.unlink()
    codes: dict[str, Any] = {}
    for code in quality.CODES:
        tp = sum(code in t["found"] and code in t["expected"] for t in takes)
        fp = sum(code in t["found"] and code not in t["expected"] for t in takes)
        fn = sum(code not in t["found"] and code in t["expected"] for t in takes)
        codes[code] = {
            "planted": tp + fn,
            "found": tp,
            "false_positives": fp,
            "precision": round(tp / (tp + fp), 3) if tp + fp else None,
            "recall": round(tp / (tp + fn), 3) if tp + fn else None,
        }
    good = [t for t in takes if not t["expected"]]
    planted = [t for t in takes if t["expected"]]
    return {
        "takes": len(takes),
        "seconds_each": sizes.case_seconds,
        "codes": codes,
        "good_takes": len(good),
        "good_takes_failed": sum(bool(t["found"]) for t in good),
        "defective_takes": len(planted),
        "defects_missed": sum(not set(t["expected"]) <= set(t["found"]) for t in planted),
        "wrong": [t for t in takes if sorted(t["found"]) != sorted(t["expected"])],
    }


def tables(results: dict[str, Any]) -> str:
    speed = results["cost"]
    rows = [
        "Cost (CPU s per minute of audio; goals: <= "
        f"{GOAL_PLAIN:g} without tempo/key, <= {GOAL_ANALYSIS:g} with)",
        "{:<8} {:>8} {:>16} {:>16}".format("format", "minutes", "without", "with tempo/key"),
    ]
    for fmt, f in speed["formats"].items():
        rows.append(
            f"{fmt:<8} {f['minutes_of_audio']:>8.1f} {f['cpu_seconds_per_minute']:>16.3f} "
            f"{f['cpu_seconds_per_minute_with_tempo_key']:>16.3f}"
        )
    rows.append(
        f"(the first analysis in a process costs {speed['first_analysis_cpu_seconds']:.1f} CPU s "
        "more: librosa loading its compiled parts)"
    )
    found = results["accuracy"]
    rows += [
        "",
        f"Findings ({found['takes']} takes of {found['seconds_each']:g} s, "
        f"{found['good_takes']} good, {found['defective_takes']} defective)",
        "{:<12} {:>8} {:>6} {:>6} {:>10} {:>7}".format(
            "finding", "planted", "found", "false+", "precision", "recall"
        ),
    ]
    for code, c in found["codes"].items():
        precision = "-" if c["precision"] is None else f"{c['precision']:.2f}"
        recall = "-" if c["recall"] is None else f"{c['recall']:.2f}"
        rows.append(
            f"{code:<12} {c['planted']:>8} {c['found']:>6} {c['false_positives']:>6} "
            f"{precision:>10} {recall:>7}"
        )
    goals = results["goals"]
    rows.append(
        f"every planted defect found: {'yes' if goals['every_defect_found'] else 'NO'}; "
        f"no good take failed: {'yes' if goals['no_good_take_failed'] else 'NO'}; "
        f"cost goals met: {'yes' if goals['cost'] else 'NO'}"
    )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short takes, few of them")
    parser.add_argument("--out", type=Path, default=None, help=f"JSON output (default {RESULTS})")
    args = parser.parse_args(argv)
    if not quality.ANALYSIS_INSTALLED:
        print("librosa is not installed: pip install 'bygheartd[analysis]'", file=sys.stderr)
        return 2
    sizes = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="bygheartd-bench-quality-") as tmp:
        folder = Path(tmp)
        speed = cost(folder, sizes)
        found = accuracy(folder, sizes)
    formats = speed["formats"].values()
    results: dict[str, Any] = {
        "quick": args.quick,
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "librosa": importlib.metadata.version("librosa"),
        "sizes": asdict(sizes),
        "cost": speed,
        "accuracy": found,
        "goals": {
            "cost": all(
                f["cpu_seconds_per_minute"] <= GOAL_PLAIN
                and f["cpu_seconds_per_minute_with_tempo_key"] <= GOAL_ANALYSIS
                for f in formats
            ),
            "every_defect_found": found["defects_missed"] == 0,
            "no_good_take_failed": found["good_takes_failed"] == 0,
        },
    }
    print(tables(results))
    out = args.out or (RESULTS.with_name("quality-quick.json") if args.quick else RESULTS)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
