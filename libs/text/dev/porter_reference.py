#!/usr/bin/env python3
"""Reference stems for libs/text/src/porter.ts: NLTK's PorterStemmer in its default mode.

    porter_reference.py < words.txt            one word a line in, "word<TAB>stem" lines out
    porter_reference.py --word-list            prints the test word list (from /usr/share/dict/words)

The committed libs/text/test-data/porter-expected.tsv was made with

    /usr/bin/python3 libs/text/dev/porter_reference.py --word-list \
      | /usr/bin/python3 libs/text/dev/porter_reference.py > libs/text/test-data/porter-expected.tsv

(Debian: apt-get install python3-nltk wamerican). This is how rouge_score calls it:
PorterStemmer() then .stem(word).
"""
import sys

# Words the npm stemmers and the other Porter variants get wrong, the NLTK-only rules and the
# irregular-forms pool, words of one and two letters, upper case and non-ASCII.
TRICKY = """
dying lying tying dies died dyed ties tied lies lied pies pied flies flied spies spied cries cried
skies sky news innings inning outings outing cannings canning howe proceed exceed succeed proceeds
exceeded succeeding enjoy enjoys enjoyed enjoying enjoyment joy toy boy boys annoy annoying
generously generous generate generation generational happy happiness happily sky spy fly try dry
by my y yy yyy ay aye eye eyes eying toying saying obeying played playing plays
agreed feed fed bled sing singing motoring plastered conflated troubled sized hopping tanned
falling hissing fizzed failing filing filed caresses ponies ties caress cats
relational conditional rational valenci hesitanci digitizer conformabli radicalli differentli
vileli analogousli vietnamization predication operator feudalism decisiveness hopefulness
callousness formaliti sensitiviti sensibiliti triplicate formative formalize electriciti
electrical hopeful goodness revival allowance inference airliner gyroscopic adjustable defensible
irritant replacement adjustment dependent adoption homologou communism activate angulariti
homologous effective bowdlerize probate rate cease controll roll
geology theology archaeology geologi theologi logi biology apology analogies analogy
fully hopefully carefully beautifully doubtfully fulli
totally really finally basically ideally allies rally rallies alliance dallied
able table cable possibly noble nobly humbly bli abli
at on in is it as us go an am be do he me no of or so to up we
a i o u x  e
ion lion lions station nation question
abatement cement ement ment
oed ied eed ed ing ings
cvc hop hoped hope hoping fail fil file
sses ss s ies
running runs ran run ate eaten eating
university universe universal
organization organize organizing organizer organic organism
Dying DYING News Enjoy SKY Skies
Asunción Atatürk naïve café résumé façade über
x86 2nd 3rd 100s 1990s covid19 mp3s a1b2c3
don't o'clock rock'n'roll e-mail
"""


def word_list():
    words = []
    seen = set()

    def add(w):
        if w and w not in seen:
            seen.add(w)
            words.append(w)

    for w in TRICKY.split():
        add(w)
    with open("/usr/share/dict/words", encoding="utf-8") as f:
        dictionary = [line.rstrip("\n") for line in f if line.strip()]
    # Every 25th word of the dictionary ...
    for w in dictionary[::25]:
        add(w)
    # ... and, for every suffix a rule looks at, the first few dictionary words ending in it.
    suffixes = (
        "sses ies ss s eed ied ed ing at bl iz y ational tional enci anci izer bli abli alli entli eli "
        "ousli ization ation ator alism iveness fulness ousness aliti iviti biliti fulli logi icate "
        "ative alize iciti ical ful ness al ance ence er ic able ible ant ement ment ent sion tion ion "
        "ou ism ate iti ous ive ize e ll"
    ).split()
    for suffix in suffixes:
        picked = 0
        for w in dictionary:
            if w.endswith(suffix) and "'" not in w and w.islower():
                if w not in seen:
                    add(w)
                    picked += 1
                if picked >= 12:
                    break
    return words


def main():
    if sys.argv[1:] == ["--word-list"]:
        sys.stdout.write("".join(w + "\n" for w in word_list()))
        return
    from nltk.stem.porter import PorterStemmer

    stemmer = PorterStemmer()
    out = []
    for line in sys.stdin.read().split("\n"):
        if line:
            out.append(line + "\t" + stemmer.stem(line) + "\n")
    sys.stdout.write("".join(out))


if __name__ == "__main__":
    main()
