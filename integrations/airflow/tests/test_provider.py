"""Provider registration: Airflow's providers manager sees the `airgate` connection type."""

from __future__ import annotations

from importlib.metadata import entry_points


def test_entry_point_and_connection_type():
    (ep,) = [e for e in entry_points(group="apache_airflow_provider") if e.value.startswith("airgate_airflow")]
    info = ep.load()()
    assert info["package-name"] == "airgate-airflow"
    (conn,) = info["connection-types"]
    assert conn["connection-type"] == "airgate"
    assert conn["hook-class-name"] == "airgate_airflow.hook.AirgateHook"
    assert set(conn["conn-fields"]) == {"token_file", "azure_scope"}


def test_providers_manager_offers_the_ui_fields():
    from airflow.providers_manager import ProvidersManager

    pm = ProvidersManager()
    assert "airgate-airflow" in pm.providers
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    hooks = ProvidersManagerTaskRuntime().hooks
    assert "airgate" in hooks and hooks["airgate"].hook_class_name == "airgate_airflow.hook.AirgateHook"
    widgets = pm.connection_form_widgets
    assert {"extra__airgate__token_file", "extra__airgate__azure_scope"} <= set(widgets)
    assert pm.field_behaviours["airgate"]["hidden_fields"] == ["login", "password", "schema"]
