"""After the fact, from run directories only: reading runs back (``rundirs``), VOTE/AVG ensembles
(``ensemble``) and the paper-layout report (``report``). The top layer: nothing in sdbert imports it."""
