"""A network SUMO rejects: the error carries SUMO's own message with either backend (libsumo prints it on the
process's stderr, not in its error log)."""

import pytest

from mobility.errors import MobilityError
from mobility.netgen import SumoFiles
from mobility.sumo import SumoMobility


@pytest.mark.parametrize("backend", ["libsumo", "traci"])
def test_rejected_network_carries_sumos_message(tmp_path, backend):
    net = tmp_path / "dangling.net.xml"
    net.write_text('<net version="1.20"><location netOffset="0,0" convBoundary="0,0,10,10" '
                   'origBoundary="0,0,10,10" projParameter="!"/><edge id="e" from="a" to="b">'
                   '<lane id="e_0" index="0" speed="13" length="10" shape="0,0 10,0"/></edge></net>')
    routes = tmp_path / "empty.rou.xml"
    routes.write_text("<routes/>")
    with pytest.raises(MobilityError, match="Unknown from-node 'a' for edge 'e'"):
        SumoMobility(SumoFiles(net=net, routes=(routes,)), step_length_s=1.0, seed=0, backend=backend, log_dir=tmp_path)
    assert not list(tmp_path.glob("sumo-errors-*"))  # the log goes with the failed start
