"""Who may sign in and who is an admin (`crewdash.model.people`)."""

from __future__ import annotations

from crewdash.model.people import ANONYMOUS, SERVICE, TEAM, Person, Role, TeamPolicy


def test_with_no_lists_everyone_signed_in_is_a_member() -> None:
    policy = TeamPolicy.parse()
    assert policy.role_of("alice@example.com") is Role.MEMBER
    person = policy.person(" alice@example.com ", " Alice ")
    assert person == Person("alice@example.com", "Alice", Role.MEMBER)


def test_addresses_and_domains_in_any_case_decide_roles() -> None:
    policy = TeamPolicy.parse(admins="Boss@Example.com; @ops.example.com", members="example.com")
    assert policy.role_of("boss@example.COM") is Role.ADMIN
    assert policy.role_of("ray@ops.example.com") is Role.ADMIN  # admins need no member entry
    assert policy.role_of("ann@example.com") is Role.MEMBER
    assert policy.role_of("eve@evil.com") is None
    assert policy.role_of("eve@notexample.com") is None  # a domain is the whole domain
    assert policy.role_of("example.com") is None  # no address at all
    assert policy.person("eve@evil.com") is None


def test_members_act_on_their_own_batches_and_admins_on_anyones() -> None:
    ann = Person("ann@example.com", "Ann")
    assert ann.may_act_on("ann@example.com") and not ann.may_act_on("bob@example.com")
    assert not ann.may_act_on("")  # a batch from before accounts: an admin's business
    boss = Person("boss@example.com", role=Role.ADMIN)
    assert boss.may_act_on("ann@example.com") and boss.may_act_on("")
    assert ANONYMOUS.is_admin and SERVICE.is_admin and not TEAM.is_admin
    assert ann.label == "Ann (ann@example.com)" and SERVICE.label == "service token (service)"
