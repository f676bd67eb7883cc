"""After the fact, from run directories only: reading a run back (``rundirs``), finding runs, sweeps and
setups under folders (``sweeps``), VOTE/AVG ensembles (``ensemble``), paired significance
(``significance``) and the paper-layout report (``report``, a package). The top layer: nothing in sdbert
imports it."""
