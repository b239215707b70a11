from node.identity.resume_tokens import sign, verify


def test_a_token_verifies_only_for_its_user_and_secret() -> None:
    token = sign(b"secret", "user-1")
    assert verify(b"secret", "user-1", token)
    assert not verify(b"secret", "user-2", token)
    assert not verify(b"other", "user-1", token)
    assert not verify(b"secret", "user-1", "")
