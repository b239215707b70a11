"""Who a user is: JWT verification, resume tokens, minting, and the rules for names and rooms."""
