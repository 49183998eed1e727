"""Private prompt prefixes: a persona and a memory stream, distinct per agent, of a set length.

Generative-Agents-style prompts: who the agent is, then dated memories ("[Day 2, 09:40] Ines
bought bread at the bakery with Hugo."). The memories are drawn from word lists with the
agent's own random stream, so every agent's prefix is different text, and lines are added until
the prefix reaches its target length in tokens (measured with the given counter: the runner
passes the served model's tokenizer).
"""

from __future__ import annotations

import random
from collections.abc import Callable

FIRST = ["Ada", "Bram", "Cleo", "Dario", "Esme", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kira", "Lev",
         "Mira", "Nico", "Olga", "Pavel", "Quinn", "Rosa", "Sami", "Tess", "Uma", "Viktor", "Wren", "Xavi",
         "Yara", "Zeno"]
LAST = ["Abbott", "Berg", "Castillo", "Duval", "Eriksen", "Fontaine", "Gallo", "Haas", "Iqbal", "Jansen",
        "Kowalski", "Lindqvist", "Moreau", "Novak", "Okafor", "Petrov", "Quispe", "Rossi", "Sato", "Tanaka"]
JOBS = ["baker", "blacksmith", "teacher", "farmer", "librarian", "doctor", "painter", "mayor", "fisher",
        "carpenter", "musician", "merchant", "nurse", "poet", "journalist", "engineer", "gardener", "chef"]
TRAITS = ["kind", "stubborn", "curious", "shy", "generous", "ambitious", "patient", "witty", "anxious",
          "cheerful", "practical", "romantic", "sceptical", "loyal", "restless"]
PLACES = ["the bakery", "the market", "the school", "the cafe", "the park", "the town hall", "the harbour",
          "the library", "the clinic", "the workshop", "the church square", "the train station", "the beach"]
ACTS = ["talked about the harvest", "argued about the election", "shared a pot of tea", "repaired a fence",
        "read the evening paper", "planned the summer festival", "complained about the weather",
        "bought fresh bread", "painted a small sign", "discussed a rumour about the mayor",
        "helped carry crates of fish", "practised a song for the choir", "wrote a letter to a cousin",
        "watched the boats come in", "counted the week's earnings", "cooked a stew for the neighbours"]
FEELINGS = ["felt hopeful", "felt tired", "was amused", "was worried about money", "felt proud",
            "was annoyed", "felt grateful", "was distracted", "felt lonely afterwards", "was excited"]


def agent_name(index: int) -> str:
    return f"{FIRST[index % len(FIRST)]} {LAST[(index // len(FIRST)) % len(LAST)]}"


def persona_prefix(index: int, rng: random.Random, target_tokens: int, count_tokens: Callable[[str], int]) -> str:
    """The agent's persona and memories, about `target_tokens` long (one line over at most)."""
    name = agent_name(index)
    first = name.split()[0]
    age, job, place = rng.randint(19, 78), rng.choice(JOBS), rng.choice(PLACES)
    traits = ", ".join(rng.sample(TRAITS, 3))
    lines = [f"You are {name} (agent {index}), a {age}-year-old {job} who lives near {place}. "
             f"You are {traits}. You remember the following, oldest first.",
             "Memories:"]
    total = sum(count_tokens(line) for line in lines)
    day, minute = 1, 6 * 60
    while total < target_tokens:
        minute += rng.randint(15, 180)
        if minute >= 22 * 60:
            day, minute = day + 1, 6 * 60 + rng.randint(0, 120)
        other = agent_name(rng.randrange(len(FIRST) * len(LAST)))
        line = (f"[Day {day}, {minute // 60:02d}:{minute % 60:02d}] {first} {rng.choice(ACTS)} at "
                f"{rng.choice(PLACES)} with {other} and {rng.choice(FEELINGS)}.")
        lines.append(line)
        total += count_tokens(line)
    return "\n".join(lines)
