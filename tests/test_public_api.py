"""The public API a notebook uses, as the README shows it."""

import edgekit as ek


def test_everything_in_all_is_importable():
    for name in ek.__all__:
        assert getattr(ek, name) is not None


def test_submodules_load_on_first_use():
    assert callable(ek.hub.connect)
    assert ek.hub.HubServer.__name__ == "HubServer"
    assert ek.vm.VirtualMachine.__name__ == "VirtualMachine"
    assert callable(ek.demo.run_demo)


def test_plans_render_in_notebooks(tmp_path):
    spec = ek.loads("name: n\nprofiles: []\n", ek.ForgeSpec, source="inline")
    forge = ek.Forge(spec, base_dir=tmp_path, output_dir=tmp_path / "dist")
    plan = forge.plan()
    assert plan.steps == ()
    assert "<table>" in plan._repr_html_()
