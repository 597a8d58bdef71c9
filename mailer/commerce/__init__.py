"""What customers bought: orders, their lines and the product catalogue."""
