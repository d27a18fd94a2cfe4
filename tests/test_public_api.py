import crewdash


def test_public_surface_changes_only_on_purpose() -> None:
    assert sorted(crewdash.__all__) == [
        "Batch",
        "BatchSnapshot",
        "Blueprint",
        "BlueprintError",
        "Budget",
        "CrewSnapshot",
        "CrewState",
        "CrewdashError",
        "DemoLLMServer",
        "LLMSettings",
        "LatencyProfile",
        "ProviderLimits",
        "RunSettings",
        "Runner",
        "Runtime",
        "SettingsError",
        "Span",
        "TokenUsage",
        "TopicError",
        "Topics",
        "UnknownBatchError",
        "build_llm",
        "list_blueprints",
        "load_blueprint",
        "parse_topics",
    ]
    for name in crewdash.__all__:
        assert getattr(crewdash, name) is not None


def test_importing_crewdash_switches_crewai_telemetry_off() -> None:
    import os

    assert os.environ["CREWAI_DISABLE_TELEMETRY"] == "true"
    assert os.environ["CREWAI_TRACING_ENABLED"] == "false"
    assert os.environ["OTEL_SDK_DISABLED"] == "true"
