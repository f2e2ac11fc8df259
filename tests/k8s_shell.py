"""How KubeRay's submitter shell reads a RayJob entrypoint: bash-like words, operator detection, and the
`c3dhash` commands inside.

    parse_commands("bash -c 'c3dhash a --x 1 && c3dhash b --y 2'")   # [("a", {"--x": ["1"]}), ("b", ...)]
"""
from __future__ import annotations

import shlex


def shell_words(text: str) -> list[str]:
    """bash-like words; operators (&&, ;, |, ...) come out as their own tokens even without spaces."""
    lex = shlex.shlex(text, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    return list(lex)


def submitted_argv(entrypoint: str) -> list[str]:
    """What `ray job submit -- ...` receives. KubeRay's submitter pastes the entrypoint unquoted into a
    bash line (`ray job submit ... -- <entrypoint> ; ...`): a bare `a && b` runs `b` in the submitter pod."""
    words = shell_words(entrypoint)
    operators = [w for w in words if w and set(w) <= set("&|;<>()")]
    if operators:
        raise AssertionError(f"entrypoint {entrypoint!r}: the submitter's shell would act on {operators}; "
                             f"wrap a chain as bash -c '... && ...'")
    return words


def command_argvs(entrypoint: str) -> list[list[str]]:
    """`bash -c 'c3dhash A ... && c3dhash B ...'` or `c3dhash A ...` -> [["c3dhash", "A", ...], ...]."""
    argv = submitted_argv(entrypoint)
    if argv[:2] != ["bash", "-c"]:
        return [argv]
    if len(argv) != 3:
        raise AssertionError(f"entrypoint {entrypoint!r}: bash -c takes exactly one quoted script")
    chunks: list[list[str]] = [[]]
    for word in shell_words(argv[2]):
        if word == "&&":
            chunks.append([])
        elif set(word) <= set("&|;<>()"):
            raise AssertionError(f"entrypoint {entrypoint!r}: only `&&` chains are expected, not {word!r}")
        else:
            chunks[-1].append(word)
    return chunks


def parse_commands(entrypoint: str) -> list[tuple[str, dict[str, list[str]]]]:
    """`c3dhash A --x 1 --set k=v && c3dhash B ...` -> [("A", {"--x": ["1"], "--set": ["k=v"]}), ...]."""
    out = []
    for argv in command_argvs(entrypoint):
        if len(argv) < 2 or argv[0] != "c3dhash" or len(argv[2:]) % 2:
            raise AssertionError(f"entrypoint part {' '.join(argv)!r}: "
                                 f"expected `c3dhash CMD --opt value ...`")
        opts: dict[str, list[str]] = {}
        for flag, value in zip(argv[2::2], argv[3::2]):
            opts.setdefault(flag, []).append(value)
        out.append((argv[1], opts))
    return out
