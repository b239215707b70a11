from node.backends.presence import HeldName
from node.identity import names


def test_held_names_count_each_form_per_user_over_its_connections() -> None:
    held = names.held([("alice", "u1"), ("alice", "u1"), ("bob", "u2")])
    assert sorted(held, key=lambda h: (h.user_id, h.form)) == sorted(
        [HeldName(form, "u1", 2) for form in names.canonical("alice")]
        + [HeldName(form, "u2", 1) for form in names.canonical("bob")],
        key=lambda h: (h.user_id, h.form))


def test_a_name_with_two_forms_holds_both() -> None:
    forms = names.canonical("aIice")  # a capital I: it looks like "alice"
    assert len(forms) == 2
    assert {h.form for h in names.held([("aIice", "u1")])} == set(forms)


def test_no_connections_hold_no_names() -> None:
    assert names.held([]) == []
