#!/usr/bin/env python3
"""Markdown tables of the medians of one `cargo bench -p tessera-jose` run.

Usage: table.py CRITERION_DIR [BASELINE]   (BASELINE defaults to "new", criterion's latest)
       table.py CRITERION_DIR BEFORE AFTER  (tessera's medians in two saved baselines, each
                                            also against the floor of its own run)

CRITERION_DIR is $CARGO_TARGET_DIR/criterion. Every figure is the median of criterion's
samples (estimates.json, "median.point_estimate").
"""

import json
import os
import sys

ALGS = ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
        "ES256", "ES384", "ES512", "EdDSA"]


def median(root, group, func, baseline):
    path = os.path.join(root, group, func, baseline, "estimates.json")
    try:
        with open(path) as f:
            return json.load(f)["median"]["point_estimate"]
    except FileNotFoundError:
        return None


def fmt_time(ns):
    if ns is None:
        return "—"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs" if ns < 1e5 else f"{ns / 1e3:.0f} µs"
    return f"{ns:.0f} ns"


def ratio(a, b):
    if a is None or b is None:
        return "—"
    return f"{a / b:.2f}×"


def one_run(root, baseline):
    out = []
    out.append("#### sign\n")
    out.append("| alg | tessera | jsonwebtoken | jwt-simple | floor | tessera ÷ floor "
               "| jsonwebtoken ÷ tessera | jwt-simple ÷ tessera |")
    out.append("|---|--:|--:|--:|--:|--:|--:|--:|")
    for alg in ALGS:
        g = f"sign-{alg}"
        t, j, s, f = (median(root, g, x, baseline)
                      for x in ("tessera", "jsonwebtoken", "jwt-simple", "floor"))
        if t is None:
            continue
        out.append(f"| {alg} | {fmt_time(t)} | {fmt_time(j)} | {fmt_time(s)} | {fmt_time(f)} "
                   f"| {ratio(t, f)} | {ratio(j, t)} | {ratio(s, t)} |")
    out.append("\n#### verify + validate\n")
    out.append("| alg | tessera | tessera-borrowed | jsonwebtoken | jwt-simple | floor "
               "| tessera ÷ floor | borrowed ÷ floor | jsonwebtoken ÷ tessera "
               "| jwt-simple ÷ tessera |")
    out.append("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for alg in ALGS:
        g = f"verify-{alg}"
        t, b, j, s, f = (median(root, g, x, baseline)
                         for x in ("tessera", "tessera-borrowed", "jsonwebtoken",
                                   "jwt-simple", "floor"))
        if t is None:
            continue
        out.append(f"| {alg} | {fmt_time(t)} | {fmt_time(b)} | {fmt_time(j)} | {fmt_time(s)} "
                   f"| {fmt_time(f)} | {ratio(t, f)} | {ratio(b, f)} | {ratio(j, t)} "
                   f"| {ratio(s, t)} |")
    return "\n".join(out)


def before_after(root, before, after):
    out = ["| operation | alg | before | before ÷ its floor | after | after ÷ its floor "
           "| after ÷ before |",
           "|---|---|--:|--:|--:|--:|--:|"]
    for op, funcs in (("sign", ["tessera"]), ("verify", ["tessera", "tessera-borrowed"])):
        for alg in ALGS:
            g = f"{op}-{alg}"
            for func in funcs:
                b = median(root, g, func, before)
                a = median(root, g, func, after)
                if b is None or a is None:
                    continue
                name = op if func == "tessera" else f"{op} (borrowed)"
                fb = median(root, g, "floor", before)
                fa = median(root, g, "floor", after)
                out.append(f"| {name} | {alg} | {fmt_time(b)} | {ratio(b, fb)} | {fmt_time(a)} "
                           f"| {ratio(a, fa)} | {ratio(a, b)} |")
    return "\n".join(out)


if __name__ == "__main__":
    if len(sys.argv) == 4:
        print(before_after(sys.argv[1], sys.argv[2], sys.argv[3]))
    else:
        print(one_run(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "new"))
