"""Writes idspam/resources/demo_sentiment_{train,dev}.csv, the packaged demo data set.

Short product/experience reviews composed from hand-written phrases, labelled positive/negative.
A fifth of the sentiment phrases appear only in the dev set, so dev accuracy measures more than
memorised phrases. Seeded: running it again reproduces the committed files byte for byte.

    python experiments/make_demo_data.py
"""

import csv
import random
from pathlib import Path

SUBJECTS = [
    "the movie", "this restaurant", "the hotel room", "our waiter", "the new phone", "this book", "the concert",
    "the customer service", "the coffee", "the laptop", "the flight", "this album", "the museum tour", "the pizza",
    "the software update", "the park", "the train ride", "this game", "the hairdresser", "the apartment",
    "the lecture", "the delivery", "the headphones", "the soup", "the play", "the car rental", "the gym",
    "the bakery", "the documentary", "the hiking trail", "the sequel", "the campsite", "the app", "the guide",
]
POSITIVE = [
    "was absolutely wonderful", "exceeded all my expectations", "made my whole day", "was a real delight",
    "is worth every penny", "left me smiling", "was friendly and helpful", "works perfectly",
    "was beautifully done", "felt warm and welcoming", "was a joy from start to finish", "is the best I have tried",
    "impressed everyone", "was fantastic", "was fresh and tasty", "arrived early and in perfect shape",
    "was clean and comfortable", "kept me hooked", "sounds amazing", "was brilliant", "runs smoothly",
    "was pleasant and relaxing", "deserves five stars", "is a hidden gem", "was thoughtful and charming",
    "was great fun", "was a lovely surprise", "was superb", "made everything easy", "is simply excellent",
    "was a pleasure", "felt like great value", "was charming", "was outstanding", "is a real treat",
]
NEGATIVE = [
    "was a complete waste of time", "was rude and slow", "broke after two days", "was dirty and noisy",
    "left me bored", "was awful", "is overpriced and bland", "was a huge disappointment", "never works properly",
    "tasted stale", "arrived late and damaged", "was painfully dull", "made me angry", "felt cold and unwelcoming",
    "was a total mess", "is the worst I have tried", "crashed constantly", "smelled terrible",
    "was confusing and badly organised", "was poorly made", "kept freezing", "ruined our evening",
    "was a rip-off", "was dreadful", "fell apart quickly", "was loud and cramped", "wasted my money",
    "was a nightmare", "is not worth it", "was terribly slow", "left a bad taste", "was mediocre at best",
    "was shoddy", "was frustrating", "is a letdown",
]
NOT_NEGATIVE = ["bad", "boring", "disappointing", "annoying", "expensive", "slow"]  # "was not X at all" -> positive
NOT_POSITIVE = ["good", "enjoyable", "worth it", "pleasant", "helpful", "comfortable"]  # "was not X at all" -> negative
FRAMES = ["{s} {p}.", "Honestly, {s} {p}.", "I think {s} {p}.", "{s} {p}, as my friends agreed.",
          "Overall, {s} {p}.", "To be fair, {s} {p}.", "{s} {p} this time.", "In my opinion {s} {p}."]


def sentences(rng, phrases, label, n):
    out = set()
    while len(out) < n:
        text = rng.choice(FRAMES).format(s=rng.choice(SUBJECTS), p=rng.choice(phrases))
        out.add((text[0].upper() + text[1:], label))
    return sorted(out)


OUT_DIR = Path(__file__).resolve().parent.parent / "idspam" / "resources"


def main(out_dir=OUT_DIR):
    rng = random.Random(0)
    # the last 7 phrases of each list are dev-only
    train = (sentences(rng, POSITIVE[:-7] + [f"was not {w} at all" for w in NOT_NEGATIVE[:4]], "positive", 200)
             + sentences(rng, NEGATIVE[:-7] + [f"was not {w} at all" for w in NOT_POSITIVE[:4]], "negative", 200))
    dev = (sentences(rng, POSITIVE + [f"was not {w} at all" for w in NOT_NEGATIVE], "positive", 60)
           + sentences(rng, NEGATIVE + [f"was not {w} at all" for w in NOT_POSITIVE], "negative", 60))
    seen = {t for t, _ in train}
    dev = [row for row in dev if row[0] not in seen]
    for name, rows in (("train", train), ("dev", dev)):
        rng.shuffle(rows)
        with open(out_dir / f"demo_sentiment_{name}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["sentence", "label"])
            writer.writerows(rows)
        print(f"{name}: {len(rows)} rows")


if __name__ == "__main__":
    main()
