from steerheal import data


def test_shipped_persona_pairs_cover_the_required_axes():
    pairs = data.persona_pairs()
    for name in ("care-over-authority", "authority-over-care", "love-humanity", "honest-dishonest"):
        assert name in pairs
    assert len(pairs) >= 6
    for pair in pairs.values():
        assert pair.pos.strip() and pair.neg.strip() and pair.pos != pair.neg
        assert len(pair.narration) >= 5
        assert all(p == p.lower() for p in pair.narration)


def test_contexts_are_many_distinct_and_disjoint_from_heldout():
    ctx, held = data.contexts(), data.heldout_prompts()
    assert len(ctx) >= 200 and len(set(ctx)) == len(ctx)
    assert len(held) >= 40 and not set(ctx) & set(held)


def test_generic_and_refusal_phrase_lists_are_lowercase():
    for phrases in (data.generic_narration(), data.refusal_phrases()):
        assert len(phrases) >= 10
        assert all(p == p.lower() for p in phrases)
