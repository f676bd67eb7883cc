"""After the fact, from run directories only: reading runs back (``rundirs``), VOTE/AVG ensembles
(``ensemble``), paired significance against BASE (``significance``) and the paper-layout report
(``report``, a package). The top layer: nothing in sdbert imports it."""
