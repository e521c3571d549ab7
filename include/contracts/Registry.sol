// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title Registry: a key/value registry with a counter and a payable entry point.
/// @notice Every state-changing call emits an event, so the indexer has something to follow:
///         record -> Recorded, increment / bump -> Incremented, pay -> Paid, withdraw -> Withdrawn.
contract Registry {
    address public owner;
    uint256 public count;
    mapping(bytes32 => string) private values;

    event Recorded(bytes32 indexed key, address indexed by, string value, uint256 count);
    event Incremented(address indexed by, uint256 count);
    event Paid(address indexed from, uint256 amount, string memo);
    event Withdrawn(address indexed to, uint256 amount);

    constructor() {
        owner = msg.sender;
    }

    function record(bytes32 key, string calldata value) external returns (uint256) {
        require(bytes(value).length > 0, "Registry: empty value");
        values[key] = value;
        count += 1;
        emit Recorded(key, msg.sender, value, count);
        return count;
    }

    function get(bytes32 key) external view returns (string memory) {
        return values[key];
    }

    function increment() external returns (uint256) {
        count += 1;
        emit Incremented(msg.sender, count);
        return count;
    }

    /// @notice Increments `times` times in one transaction (one event each).
    function bump(uint256 times) external returns (uint256) {
        require(times > 0 && times <= 2000, "Registry: times out of range");
        uint256 c = count;
        for (uint256 i = 0; i < times; i++) {
            c += 1;
            emit Incremented(msg.sender, c);
        }
        count = c;
        return c;
    }

    function pay(string calldata memo) external payable {
        require(msg.value > 0, "Registry: no value sent");
        emit Paid(msg.sender, msg.value, memo);
    }

    function balance() external view returns (uint256) {
        return address(this).balance;
    }

    function add(uint256 a, uint256 b) external pure returns (uint256) {
        return a + b;
    }

    function withdraw(address payable to) external {
        require(msg.sender == owner, "Registry: caller is not the owner");
        uint256 amount = address(this).balance;
        emit Withdrawn(to, amount);
        (bool ok, ) = to.call{value: amount}("");
        require(ok, "Registry: withdraw failed");
    }
}
