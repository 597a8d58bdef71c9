"""What a customer's purchase history says about them: RFM scores and segments, the
BG/NBD and Gamma-Gamma models of how many more orders they will place and what those orders
will be worth, and a predicted next order date. Pure numbers over numpy arrays: no database,
so a refresh of every customer is one vectorised pass and every model is tested without I/O."""
