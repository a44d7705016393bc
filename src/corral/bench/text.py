"""Random prompt text of an exact token length.

Text is drawn from short common English words of 1-4 letters (one token each, with their
leading space, in GPT-2/Llama/Qwen vocabularies; 3.2 letters on average, so the chars / 4
estimate of tokens.py is within ~5 % of one token per word). The number of words is then adjusted against the
counter until the whole prompt (prefix included) has the target count, as vLLM's random
dataset does with token ids; a few rounds of the counter are enough. When the target cannot
be hit exactly (two words merging into one token), the closest count is kept and reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from corral.bench.tokens import TokenCounter

WORDS: tuple[str, ...] = tuple(
    """the of and to in is it you that he was for on are as with his they at be this from have
    or by one had not but what all were when we can an your said if do will each how up out
    them then she many some so into has more her two like him see time no make than been its
    who now my made over did down only way find use may long very just most know get back
    much go good new our me man too any day same look also came come work must does part
    even well such here take why help put away off went old tell men say name home big give
    air line set own read last us left end next saw both few show want form food keep feet
    land side boy once life took four head kind live page got need far hand high year let
    soon ever hard near best sure knew try told sun hear room sea top city play five seen
    car body upon turn move face door cut done true red fish ten yes a i am act add age ago
    aid aim ant ape arm art ask ate bad bag bar bat bay bed bee bet bid bin bit box bud bug
    bus buy cab cap cat cow cry cub cup dad den dew die dig dim dip dog dot dry due dug ear
    eat egg era eye fan fat fed fee fig fin fit fix fly fog fox fun fur gap gas gum gun guy
    ham hat hay hen hid hip hit hop hot hub hug hum hut ice ill ink inn jam jar jaw jet job
    jog joy key kid kin kit lab lad lap law lay led leg lid lie lip lit log lot low mad map
    mat met mix mud mug nap net nod nut oak odd oil owl pad pal pan pat paw pay pea pen pet
    pie pig pin pit pop pot ran rat raw ray rib rid rim rip rod row rub rug run sad sat sew
    shy sip sir sit six sky son spy sum tab tag tan tap tax tea tie tin tip toe ton toy tub
    van vet war wax web wet win won yet zoo""".split()
)

_WORDS = np.array(WORDS, dtype=object)


def draw_words(rng: np.random.Generator, tokens: int) -> list[str]:
    """A pool of random words generously larger than ``tokens`` (the fit takes a prefix of it)."""
    return list(_WORDS[rng.integers(0, len(_WORDS), size=2 * tokens + 16)])


@dataclass(frozen=True, slots=True)
class FitJob:
    """Make ``prefix + some of words`` exactly ``target`` tokens long."""

    words: Sequence[str]
    target: int
    prefix: str = ""
    prefix_tokens: int = 0


def _text(job: FitJob, k: int) -> str:
    body = " ".join(job.words[:k])
    if not job.prefix:
        return body
    return f"{job.prefix} {body}" if body else job.prefix


async def fit_texts(counter: TokenCounter, jobs: Sequence[FitJob], rounds: int = 8) -> list[tuple[str, int]]:
    """(text, its token count) per job; the count equals the target whenever reachable."""
    ks = [max(0, min(len(j.words), j.target - j.prefix_tokens)) for j in jobs]
    best: list[tuple[int, int] | None] = [None] * len(jobs)  # (k, count)
    seen: list[set[int]] = [set() for _ in jobs]
    pending = list(range(len(jobs)))
    for _ in range(rounds):
        if not pending:
            break
        counts = await counter.count([_text(jobs[i], ks[i]) for i in pending])
        still = []
        for i, count in zip(pending, counts, strict=True):
            job, k = jobs[i], ks[i]
            seen[i].add(k)
            if best[i] is None or abs(count - job.target) < abs(best[i][1] - job.target):  # type: ignore[index]
                best[i] = (k, count)
            nxt = max(0, min(len(job.words), k + job.target - count))
            if count != job.target and nxt not in seen[i]:
                ks[i] = nxt
                still.append(i)
        pending = still
    return [(_text(job, b[0]), b[1]) for job, b in zip(jobs, best, strict=True) if b is not None]
